"""slimkit prune"""

from __future__ import annotations

import argparse
import json

from slimkit.cli import layer_patterns, model_dir, positive_int, task_arguments
from slimkit.cli.output import add_force, claim_out

HELP = ("Pruning: unstructured (magnitude, l2, random, taylor, wanda, sparsegpt; per layer or global), N:M, or "
        "structured (--structured --ratio: channels, neurons and heads physically removed through a dependency "
        "graph); optionally fine-tunes with the masks kept; writes a slimkit artifact (sparse tensors stored "
        "compactly) to --out and prints the before/after table. MODEL_DIR is a slimkit artifact or a Hugging Face "
        "model folder.")
EXAMPLE = ("example:\n  slimkit prune ~/.cache/slimkit/cnn-* --sparsity 0.9 --method magnitude --scope global "
           "--finetune-steps 200 --out cnn-sparse90\n  slimkit prune MODEL_DIR --structured --ratio 0.5 --method l1 "
           "--finetune-steps 300 --out m-half --layers\n  slimkit prune GPT_DIR --sparsity 0.5 --method wanda "
           "--out gpt-wanda50 --sensitivity")


def nm_pattern(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write N:M, e.g. 2:4") from None
    return n, m


def add_arguments(p) -> None:
    from slimkit.pruning.config import SCOPES, STRUCTURED_METHODS, UNSTRUCTURED_METHODS

    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir)
    p.add_argument("--out", required=True, help="folder for the pruned artifact")
    add_force(p)
    p.add_argument("--sparsity", type=float, default=0.0, help="fraction of weights zeroed, in [0, 1)")
    p.add_argument("--method", choices=sorted(set(UNSTRUCTURED_METHODS + STRUCTURED_METHODS)),
                   help="importance (default: magnitude, or l1 with --structured)")
    p.add_argument("--scope", default="layer", choices=SCOPES, help="per-layer targets or one global threshold")
    p.add_argument("--nm", type=nm_pattern, metavar="N:M", help="semi-structured: keep N of every M weights")
    p.add_argument("--structured", action="store_true", help="remove channels/neurons/heads physically")
    p.add_argument("--ratio", type=float, default=0.0, help="structured: fraction of each group's channels removed")
    layer_patterns(p)
    p.add_argument("--calib-batches", type=positive_int, default=8, help="batches for taylor/wanda/sparsegpt")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N", help="fine-tune N steps afterwards")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="fine-tuning batch size (default 64)")
    task_arguments(p, "task for the table, calibration and fine-tuning")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    p.add_argument("--sensitivity", action="store_true",
                   help="before pruning, sweep each layer alone over 25..90%% sparsity; table + sensitivity.png")
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
    from slimkit.pruning.sensitivity import sensitivity
    from slimkit.recipes.prune import PruneRecipe, run_recipe
    from slimkit.training import TrainConfig

    if args.finetune_steps < 0:
        raise UserInputError(f"--finetune-steps {args.finetune_steps}: the number of steps cannot be negative")
    config = registry.config_from_args("prune", args)
    method = config.method
    if not (config.sparsity or config.nm or config.structured):
        raise UserInputError("nothing to prune: give --sparsity, --nm N:M or --structured --ratio")
    finetune = TrainConfig(steps=args.finetune_steps, lr=args.lr, threads=args.threads) if args.finetune_steps else None
    model = load(args.model_dir)
    task = cli_task(model, args.model_dir, args.task, args.data)
    before = evaluate(model, task, name="before", threads=args.threads)
    swept = sensitivity(model, task) if args.sensitivity else None
    report = run_recipe(model, PruneRecipe(config, finetune, args.batch_size), task)
    save(model, args.out, metrics={"prune": config.to_dict(), "finetune_steps": args.finetune_steps})
    label = f"{'structured ' if config.structured else ''}{method}" + (f" + {args.finetune_steps} steps"
                                                                      if finetune else "")
    after = evaluate(model, task, name=f"after ({label})", technique="pruning", baseline="before",
                     artifact_dir=args.out, threads=args.threads)
    if swept:
        swept.plot(f"{args.out}/sensitivity.png")
    if args.json:
        print(json.dumps({"records": [before.to_dict(), after.to_dict()], "report": report.to_dict(),
                          "sensitivity": swept.to_dict() if swept else None, "manifest": get_manifest(model),
                          "out": args.out}, indent=2))
        return 0
    print(markdown_table([before, after]))
    if args.layers:
        print("\n" + report.table())
    if swept:
        print("\n" + swept.table() + f"\n\nplot: {args.out}/sensitivity.png")
    for r in report.layers:
        if r.note:
            print(f"note: {r.layer}: {r.note}")
    print(f"\nwrote {args.out}")
    return 0
