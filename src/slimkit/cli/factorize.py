"""slimkit factorize"""

from __future__ import annotations

import json

from slimkit.cli import layer_patterns, model_dir, positive_int, task_arguments
from slimkit.cli.output import add_force, claim_out

HELP = ("Low-rank factorization: truncated SVD of Linear layers, Tucker-2 (or spatial SVD) of Conv2d layers, "
        "the rank chosen by --energy, --rank or --param-budget; optionally fine-tunes on the task's training "
        "data; writes a slimkit artifact to --out and prints the before/after table. MODEL_DIR is a slimkit "
        "artifact or a Hugging Face model folder.")
EXAMPLE = ("example:\n  slimkit factorize ~/.cache/slimkit/gpt-* --param-budget 0.5 --include 'blocks.*.mlp.*' "
           "--finetune 200 --out gpt-lowrank\n  slimkit factorize MODEL_DIR --energy 0.9 --out m-lowrank --layers")


def add_arguments(p) -> None:
    from slimkit.lowrank import CONV_METHODS

    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir)
    p.add_argument("--out", required=True, help="folder for the factorized artifact")
    add_force(p)
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--energy", type=float, help="keep this fraction of each layer's squared singular values")
    rule.add_argument("--rank", type=positive_int, help="the same rank for every layer")
    rule.add_argument("--param-budget", type=float, help="fraction of each layer's weights the factors may keep")
    layer_patterns(p)
    p.add_argument("--conv", default="tucker2", choices=CONV_METHODS,
                   help="Conv2d layers: tucker2 (default), spatial SVD, or skip")
    p.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                   help="fine-tune this many steps on the task's training data afterwards (digits, pycorpus)")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="fine-tuning batch size (default 16)")
    task_arguments(p, "task for the table")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table (ranks, skip reasons)")
    p.add_argument("--json", action="store_true", help="print the records, the per-layer report and the manifest")


def run(args) -> int:
    claim_out(args, args.model_dir)
    from slimkit import registry
    from slimkit.errors import UserInputError
    from slimkit.evaluation.report import markdown_table
    from slimkit.io import load, save
    from slimkit.manifest import get_manifest
    from slimkit.models.hf_tasks import cli_task
    from slimkit.models.tasks import evaluate
    from slimkit.training import TrainConfig

    config = registry.config_from_args("factorize", args)
    if args.finetune < 0:
        raise UserInputError(f"--finetune {args.finetune}: the number of steps cannot be negative")
    model = load(args.model_dir)
    task = cli_task(model, args.model_dir, args.task, args.data)
    before = evaluate(model, task, name="before", threads=args.threads)
    inputs = registry.Inputs(data=task, batch_size=args.batch_size, paths=None)
    report = registry.apply(model, "factorize", config, inputs).report
    records = [before]
    label = f"low-rank ({config.rule})"
    if args.finetune:
        records.append(evaluate(model, task, name=f"after {label}", technique="low-rank", baseline="before",
                                threads=args.threads))
        registry.apply(model, "train", TrainConfig(steps=args.finetune, lr=args.lr, threads=args.threads), inputs)
        label += f" + {args.finetune} fine-tuning steps"
    save(model, args.out, metrics={"factorize": config.to_dict(), "finetune_steps": args.finetune})
    records.append(evaluate(model, task, name=f"after {label}", technique="low-rank", baseline="before",
                            artifact_dir=args.out, threads=args.threads))
    if args.json:
        print(json.dumps({"records": [r.to_dict() for r in records], "report": report.to_dict(),
                          "manifest": get_manifest(model), "out": args.out}, indent=2))
        return 0
    print(markdown_table(records))
    if args.layers:
        print("\n" + report.table())
    hint = "" if args.layers else " (--layers for the reasons)"
    print(f"\nfactorized {len(report.factorized)} layer(s), their weights {report.params_before:,} -> "
          f"{report.params_after:,}; left alone {len(report.skipped)}{hint}")
    print(f"wrote {args.out}")
    return 0
