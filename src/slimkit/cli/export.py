"""slimkit export"""

from __future__ import annotations

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

    p.add_argument("model_dir", metavar="MODEL_DIR")
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
    from slimkit.errors import UserInputError
    from slimkit.io import load

    if Path(args.out).exists() and not args.force:  # before the model loads: a quick one-line refusal
        raise UserInputError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    model = load(args.model_dir)
    out = export(model, args.out, to=args.to, force=args.force, float_layers=args.float_layers)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    check = _check(model, out, args.to) if args.check else None
    if args.json:
        print(json.dumps({"out": str(out), "to": args.to, "files": files, "check": check}, indent=2))
    else:
        for name, size in files.items():
            print(f"{size:>12,d}  {name}")
        print(f"wrote {out} ({args.to}, {sum(files.values()):,} bytes)")
        if check:
            print(f"read back with {check['reader']}: {check['status']} (largest difference / largest output "
                  f"{check['relative_difference']:.1e} on {check['inputs']})")
    return 1 if check and check["status"] != "matched" else 0


def _check(model, out: Path, to: str) -> dict:
    import torch

    from slimkit.deployment.verify import MATCH, READER_PACKAGES, model_output, probe_inputs, read_back, relative_difference
    from slimkit.errors import MissingDependencyError

    inputs = probe_inputs(model)
    try:
        theirs = read_back(out, to, inputs)
    except ImportError:
        raise MissingDependencyError(f"--check reads {to} with {' and '.join(READER_PACKAGES[to])}: "
                                     f"pip install {' '.join(READER_PACKAGES[to])}") from None
    with torch.no_grad():
        error = relative_difference(theirs, model_output(model, inputs))
    shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in inputs.items())
    return {"reader": " + ".join(READER_PACKAGES[to]), "status": "matched" if error <= MATCH else "differs",
            "relative_difference": error, "inputs": f"seeded {shapes}"}
