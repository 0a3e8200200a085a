"""slimkit export"""

from __future__ import annotations

from slimkit.cli import model_dir

import json
from pathlib import Path

HELP = ("Write a compressed model in a format serving engines load: compressed-tensors (transformers, vLLM), "
        "gguf (llama.cpp), onnx (onnxruntime), from slimkit's own codes and scales, or hf (a pruned "
        "transformers model as a plain Hugging Face folder). MODEL_DIR is a slimkit "
        "artifact or a Hugging Face model folder. What the target cannot represent exactly is refused.")
EXAMPLE = ("example:\n  slimkit quantize llama-dir --weights int4 --group-size 32 --out llama-int4\n"
           "  slimkit export llama-int4 --to compressed-tensors --out llama-w4a16\n"
           "  slimkit export llama-int4 --to gguf --out llama-gguf\n"
           "  slimkit prune llama-dir --structured --ratio 0.25 --out llama-pruned\n"
           "  slimkit export llama-pruned --to hf --out llama-pruned-hf")


def add_arguments(p) -> None:
    from slimkit.deployment import TARGETS

    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir)
    p.add_argument("--to", required=True, choices=TARGETS, help="the format to write")
    p.add_argument("--out", required=True, help="folder to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--float-layers", choices=["q4_k"],
                   help="gguf only: quantize the Linear layers still in float to Q4_K (llama.cpp's search)")
    p.add_argument("--check", action="store_true", help="read the written model back with the target's own reader "
                   "(onnxruntime; transformers for the Hugging Face targets and GGUF) and compare its output with "
                   "slimkit's on seeded inputs; exit 1 if they differ")
    p.add_argument("--json", action="store_true", help="print the written files and their bytes as JSON")


def run(args) -> int:
    from slimkit.deployment import export
    from slimkit.deployment.verify import READER_PACKAGES, check_export
    from slimkit.errors import MissingDependencyError, UserInputError
    from slimkit.io import load

    if Path(args.out).exists() and not args.force:  # before the model loads: a quick one-line refusal
        raise UserInputError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    model = load(args.model_dir)
    out = export(model, args.out, to=args.to, force=args.force, float_layers=args.float_layers)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    check = check_export(model, out, args.to) if args.check else None
    if check and check.status == "no reader":
        raise MissingDependencyError(f"--check reads {args.to} with {' and '.join(READER_PACKAGES[args.to])}: "
                                     f"{check.detail} (the export was written: {out})")
    if args.json:
        print(json.dumps({"out": str(out), "to": args.to, "files": files, "check": check and vars(check)}, indent=2))
    else:
        for name, size in files.items():
            print(f"{size:>12,d}  {name}")
        print(f"wrote {out} ({args.to}, {sum(files.values()):,} bytes)")
        if check:
            print(f"read back with {' + '.join(READER_PACKAGES[args.to])}: {check.status} (largest difference / "
                  f"largest output {check.detail}, on seeded inputs)")
    return 1 if check and check.status != "matched" else 0
