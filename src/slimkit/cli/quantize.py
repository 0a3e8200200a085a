"""slimkit quantize"""

from __future__ import annotations

import argparse
import json
import re

from slimkit.cli import layer_patterns, model_dir, positive_int, task_arguments
from slimkit.cli.output import add_force, claim_out

HELP = ("Weight-only post-training quantization of every Linear layer (RTN, GPTQ or AWQ) into packed "
        "codes, or with --activations int8 weights and activations to int8 (dynamic, static with "
        "calibration, or QAT); writes a slimkit artifact to --out and prints the before/after table. "
        "MODEL_DIR is a slimkit artifact, a Hugging Face model folder (compressed-tensors, GPTQ and AWQ "
        "ones included), a GGUF file, or smollm2 (the pretrained SmolLM2-135M-Instruct, converted once into the cache).")
EXAMPLE = ("example:\n  slimkit quantize ~/.cache/slimkit/gpt-* --weights int4 --group-size 128 --method gptq "
           "--calib pycorpus --out gpt-int4\n  slimkit quantize MODEL_DIR --weights int4 --method gptq --asymmetric --act-order "
           "--mse-clip --awq-scale --calib minilm --calib-batches 64 --out minilm-int4\n  slimkit quantize MODEL_DIR --weights nf4 --group-size 64 "
           "--double-quant --out m-nf4\n  slimkit quantize MODEL_DIR --activations int8 --mode static --observer percentile "
           "--calib minilm --smoothquant 0.5 --out m-w8a8\n  slimkit quantize ~/.cache/slimkit/cnn-* --activations int8 "
           "--mode qat --weights int4 --qat-steps 200 --out cnn-w4a8")


def add_arguments(p) -> None:
    from slimkit.quantization import METHODS, WEIGHT_FORMATS
    from slimkit.quantization.activation.config import MODES, OBSERVERS

    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir)
    p.add_argument("--out", required=True, help="folder for the quantized artifact")
    add_force(p)
    p.add_argument("--weights", choices=WEIGHT_FORMATS,
                   help="weight format (default int4; int8 with --activations, which takes int2..int8)")
    p.add_argument("--activations", choices=["int8"], help="also quantize activations (Linear and Conv2d layers)")
    p.add_argument("--mode", choices=MODES, default="dynamic",
                   help="--activations: scales at run time (dynamic, default), calibrated (static) or trained (qat)")
    p.add_argument("--observer", choices=OBSERVERS, default="minmax",
                   help="--activations static/qat: how the calibrated range is chosen (default minmax)")
    p.add_argument("--smoothquant", type=float, metavar="ALPHA",
                   help="--activations: SmoothQuant migration strength in [0, 1] (uses calibration data)")
    p.add_argument("--outlier-threshold", type=float, metavar="T",
                   help="--activations: input columns with |x| > T stay float (LLM.int8 decomposition)")
    p.add_argument("--qat-steps", type=positive_int, default=200, help="--mode qat: training steps (default 200)")
    p.add_argument("--group-size", type=positive_int, default=128,
                   help="input features per scale (default 128)")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel instead of groups")
    p.add_argument("--method", default="rtn", choices=METHODS, help="rounding method (default rtn)")
    p.add_argument("--asymmetric", action="store_true", help="int formats: min/max affine with a zero point")
    p.add_argument("--double-quant", action="store_true", help="quantize the scales to 8 bits (QLoRA)")
    p.add_argument("--fp32-scales", action="store_true", help="store scales in float32 (default float16)")
    p.add_argument("--embeddings", action="store_true", help="also quantize embedding tables (RTN)")
    p.add_argument("--act-order", action=argparse.BooleanOptionalAction, default=None,
                   help="GPTQ: columns by decreasing Hessian diagonal, static groups (default: on with --method gptq)")
    p.add_argument("--static-groups", action="store_true",
                   help="GPTQ: every group's scale from the original weights, fixed before the column sweep")
    p.add_argument("--mse-clip", action="store_true",
                   help="GPTQ: shrink each group's range to the ratio with the least error (helps MiniLM, hurts the GPT)")
    p.add_argument("--awq-scale", action="store_true",
                   help="GPTQ on the weight scaled per input channel by AWQ's searched scale (helps both models)")
    p.add_argument("--calib", choices=["digits", "pycorpus", "minilm"],
                   help="calibration data for gptq/awq and static/smoothquant (default: the model's task)")
    p.add_argument("--calib-batches", type=positive_int, default=16, help="calibration batches (default 16)")
    layer_patterns(p)
    p.add_argument("--keep-dequant", action="store_true",
                   help="skip measuring execution paths; every layer dequantizes on each call")
    p.add_argument("--memory-budget", type=memory_budget, metavar="BYTES|FRACTIONx",
                   help="let faster paths that keep a float or bf16 copy in while the quantized layers' resident "
                        "weights fit: bytes (e.g. 300MB, 1.5GiB) or a fraction of their float32 size (e.g. 0.5x); "
                        "default: one copy of each weight, the stored size")
    p.add_argument("--layerwise", action="store_true",
                   help="weight-only, Hugging Face causal LM folders: read, calibrate and quantize one decoder layer "
                        "at a time from the safetensors (for models whose float weights do not fit in memory); "
                        "prints no before/after table, which needs the float model: measure OUT with slimkit eval")
    task_arguments(p, "task for the table and calibration")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads for latency (default 2)")
    p.add_argument("--json", action="store_true", help="print both records and the manifest as JSON")


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def memory_budget(text: str) -> int | float:
    """'0.5x' -> 0.5 (a fraction of the float32 size); '300MB' -> 300000000; '4096' -> 4096 (bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x|[KMG]i?B|B)?\s*", text, re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory budget: give bytes (4096, 300MB, 1.5GiB) "
                                         "or a fraction of the float32 size (0.5x)")
    number, unit = float(match[1]), (match[2] or "B").upper()
    return number if unit == "X" else int(number * _UNITS[unit])


def run(args) -> int:
    claim_out(args, args.model_dir)
    from slimkit import registry
    from slimkit.io import load
    from slimkit.models.hf_tasks import cli_task
    from slimkit.models.tasks import evaluate, get_task
    from slimkit.training import TrainConfig

    technique = "quantize_activations" if args.activations else "quantize"
    config = registry.config_from_args(technique, args)
    if args.layerwise:
        return _layerwise(config, args)
    model = load(args.model_dir)
    task = cli_task(model, args.model_dir, args.task, args.data)
    before = evaluate(model, task, name="before", threads=args.threads)
    paths = None if args.keep_dequant else {"memory_budget": args.memory_budget, "threads": args.threads}
    inputs = registry.Inputs(data=task, calib=get_task(args.calib) if args.calib else task, batch_size=64, paths=paths,
                             train=TrainConfig(steps=args.qat_steps, lr=1e-3, warmup=10, threads=args.threads))
    registry.apply(model, technique, config, inputs)
    if args.activations:
        label = (f"after (w{config.weight_bits}a8 {args.mode})", f"activation int8 {args.mode}")
    else:
        label = (f"after ({args.method} {config.format})", f"weight-only {args.method}")
    return _report(model, task, before, config, label, args)


def _layerwise(config, args) -> int:
    """Quantize a folder layer by layer; calibration text from the folder's causal-LM task (or --data)."""
    from pathlib import Path

    import torch

    from slimkit.errors import UserInputError
    from slimkit.hf import folder_architecture
    from slimkit.io import saving
    from slimkit.models.hf_tasks import hf_task
    from slimkit.quantization.layerwise import quantize_folder
    from slimkit.quantization.paths import choose_paths

    folder = Path(args.model_dir)
    if not (folder / "config.json").is_file():
        raise UserInputError(f"{folder}: no config.json; --layerwise reads a Hugging Face causal LM folder "
                             "(config.json and safetensors shards)")
    if args.activations or args.calib:
        raise UserInputError("--layerwise quantizes the weights of a Hugging Face causal LM folder (config.json and "
                             "safetensors) on its own text or --data; drop --activations and --calib")
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    calib = None
    if config.needs_calibration:
        with torch.device("meta"):  # the task needs the model's kind and config only: no weights are read
            shell = getattr(transformers, folder_architecture(folder))(hf_config)
        calib = hf_task(shell, folder, args.task, args.data).calibration(config.calibration_batches)
    budget = args.memory_budget  # a fraction holds for each layer; bytes are shared among the layers
    if isinstance(budget, int):
        budget //= max(1, getattr(hf_config, "num_hidden_layers", 1))

    def prepare(layer):
        if not args.keep_dequant:
            choose_paths(layer, memory_budget=budget, threads=args.threads)

    with saving(args.out) as writer:  # each layer is written as its own shard once quantized, then dropped
        rest = quantize_folder(folder, config, calib, writer=writer, prepare=prepare)
        writer.finish(rest, metrics={"quantize": config.to_dict(), "layerwise": True,
                                     "source": str(folder.resolve())}, companions=folder)
    print(f"wrote {args.out} (layer by layer, one shard per layer; measure it against the float model with: "
          f"slimkit eval {args.out})")
    return 0


def _report(model, task, before, config, label: tuple[str, str], args) -> int:
    from slimkit.models.tasks import evaluate
    from slimkit.evaluation.report import markdown_table
    from slimkit.hf import float_source
    from slimkit.io import save
    from slimkit.manifest import get_manifest

    source = float_source(args.model_dir)  # a Hugging Face model's float folder, beside which it is measured
    save(model, args.out, metrics={"quantize": config.to_dict(), **({"source": source} if source else {})},
         companions=args.model_dir)
    after = evaluate(model, task, name=label[0], technique=label[1], baseline="before", artifact_dir=args.out,
                     threads=args.threads)
    manifest = get_manifest(model)
    if args.json:
        print(json.dumps({"before": before.to_dict(), "after": after.to_dict(), "manifest": manifest,
                          "out": args.out}, indent=2))
        return 0
    print(markdown_table([before, after]))
    for entry in manifest:
        if "skipped" in entry:
            print(f"stayed float: {entry['layer']}: {entry['skipped']}")
    print(f"\nwrote {args.out}")
    return 0
