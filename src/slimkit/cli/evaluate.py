"""slimkit eval"""

from __future__ import annotations

import json

from slimkit.cli import model_dir, positive_int, task_arguments, timed_runs

HELP = ("Measure a saved model: quality, parameters, nonzeros, artifact bytes, latency, peak memory. "
        "MODEL_DIR is a slimkit artifact or a Hugging Face model folder.")
EXAMPLE = ("example:\n  slimkit eval slimkit-report/artifacts/cnn --json\n"
           "  slimkit eval path/to/hf-llama-folder --data my-text.txt\n"
           "  slimkit eval path/to/hf-bert-folder --task minilm")


def add_arguments(p) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir)
    task_arguments(p)
    p.add_argument("--batch", type=positive_int, help="batch size of the timed call (default per task)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--runs", type=timed_runs, default=7, help="timed runs, median reported (>= 5, default 7)")
    p.add_argument("--baseline", metavar="BASE_DIR", help="time the speedup against this saved model in "
                   "alternating pairs, with the spread of the per-pair ratios")
    p.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args) -> int:
    from slimkit.models.hf_tasks import cli_task
    from slimkit.models.tasks import evaluate
    from slimkit.evaluation.report import markdown_table
    from slimkit.io import load
    from slimkit.manifest import get_manifest
    from slimkit.quantization.paths import TECHNIQUE as PATH_CHOICE

    model = load(args.model_dir)
    task = cli_task(model, args.model_dir, args.task, args.data)
    techniques = [e["technique"] for e in get_manifest(model) if e["technique"] != PATH_CHOICE]
    base = load(args.baseline) if args.baseline else None
    record = evaluate(model, task, name=args.model_dir, artifact_dir=args.model_dir,
                      technique=", ".join(dict.fromkeys(techniques)) or "baseline", baseline=args.baseline,
                      batch_size=args.batch, threads=args.threads, runs=args.runs, baseline_model=base)
    print(json.dumps(record.to_dict(), indent=2) if args.json else markdown_table([record]))
    return 0
