"""slimkit quantize"""

from __future__ import annotations

import json

from slimkit.cli import positive_int

HELP = ("Weight-only post-training quantization of every Linear layer (RTN, GPTQ or AWQ) into packed "
        "codes; writes a slimkit artifact to --out and prints the before/after table. MODEL_DIR is a "
        "slimkit artifact or a Hugging Face model folder.")
EXAMPLE = ("example:\n  slimkit quantize ~/.cache/slimkit/gpt-* --weights int4 --group-size 128 --method gptq "
           "--calib pycorpus --out gpt-int4\n  slimkit quantize MODEL_DIR --weights nf4 --group-size 64 "
           "--double-quant --out m-nf4")


def add_arguments(p) -> None:
    from slimkit.quantization import METHODS, WEIGHT_FORMATS

    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--out", required=True, help="folder for the quantized artifact")
    p.add_argument("--weights", default="int4", choices=WEIGHT_FORMATS, help="weight format (default int4)")
    p.add_argument("--group-size", type=positive_int, default=128,
                   help="input features per scale (default 128)")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel instead of groups")
    p.add_argument("--method", default="rtn", choices=METHODS, help="rounding method (default rtn)")
    p.add_argument("--asymmetric", action="store_true", help="int formats: min/max affine with a zero point")
    p.add_argument("--double-quant", action="store_true", help="quantize the scales to 8 bits (QLoRA)")
    p.add_argument("--fp32-scales", action="store_true", help="store scales in float32 (default float16)")
    p.add_argument("--embeddings", action="store_true", help="also quantize embedding tables (RTN)")
    p.add_argument("--act-order", action="store_true", help="GPTQ: columns by decreasing Hessian diagonal")
    p.add_argument("--calib", choices=["digits", "pycorpus", "minilm"],
                   help="calibration data for gptq/awq (default: the model's task)")
    p.add_argument("--calib-batches", type=positive_int, default=16, help="calibration batches (default 16)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="only layers whose name matches (fnmatch; repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out layers whose name matches (fnmatch; repeatable)")
    p.add_argument("--keep-dequant", action="store_true",
                   help="skip measuring execution paths; every layer dequantizes on each call")
    p.add_argument("--no-float-cache", action="store_true",
                   help="never keep a float copy of a weight, even where that is fastest (least memory)")
    p.add_argument("--task", choices=["digits", "pycorpus", "minilm"], help="task for the table (default: inferred)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads for latency (default 2)")
    p.add_argument("--json", action="store_true", help="print both records and the manifest as JSON")


def run(args) -> int:
    from slimkit.evaluation import evaluate
    from slimkit.evaluation.report import markdown_table
    from slimkit.evaluation.tasks import get_task, infer_task
    from slimkit.io import load, save
    from slimkit.manifest import get_manifest
    from slimkit.quantization import WeightQuantConfig, quantize
    from slimkit.quantization.paths import choose_paths

    config = WeightQuantConfig(
        format=args.weights, group_size=None if args.per_channel else args.group_size,
        symmetric=not args.asymmetric, method=args.method, double_quant=args.double_quant,
        include=tuple(args.include), exclude=tuple(args.exclude), act_order=args.act_order, embeddings=args.embeddings,
        scale_dtype="float32" if args.fp32_scales else "float16",
        calib_samples=args.calib_batches)
    model = load(args.model_dir)
    task = args.task or infer_task(model)
    before = evaluate(model, task, name="before", threads=args.threads)
    calib = get_task(args.calib or task).calibration(args.calib_batches) if args.method != "rtn" else None
    quantize(model, config, calib=calib)
    if not args.keep_dequant:
        choose_paths(model, allow_cache=not args.no_float_cache, threads=args.threads)
    save(model, args.out, metrics={"quantize": config.to_dict()})
    after = evaluate(model, task, name=f"after ({args.method} {args.weights})", technique=f"weight-only {args.method}",
                     baseline="before", artifact_dir=args.out, threads=args.threads)
    if args.json:
        print(json.dumps({"before": before.to_dict(), "after": after.to_dict(), "manifest": get_manifest(model),
                          "out": args.out}, indent=2))
    else:
        print(markdown_table([before, after]))
        print(f"\nwrote {args.out}")
    return 0
