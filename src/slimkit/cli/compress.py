"""slimkit compress"""

from __future__ import annotations

import json

from slimkit.cli import model_dir, positive_int
from slimkit.cli.output import add_force, claim_out

# what compress writes in --out: step artifacts, the final artifact, the report, a search's files
OUT_FILES = ("model/*", "steps/*", "report.json", "report.md", "recipe.yaml", "search.json", "search.db",
             "pareto.png")

HELP = ("Compress a model with a recipe (YAML steps: prune, finetune, distill, factorize, quantize, "
        "quantize_activations; per-layer overrides by name pattern), resumable after an interruption; or search "
        "for the smallest (--objective bytes) or fastest (latency) model within --max-drop of the original's "
        "quality (Optuna; needs pip install 'slimkit[search]'). Writes DIR/model (the artifact), DIR/recipe.yaml, "
        "DIR/report.md. MODEL_DIR is a slimkit artifact or a Hugging Face model folder.")
EXAMPLE = ("example:\n  slimkit compress --list\n  slimkit compress ~/.cache/slimkit/cnn-* --recipe edge-int8 --out "
           "cnn-edge\n  slimkit compress MODEL_DIR --recipe my-recipe.yaml --calib pycorpus --out m-small\n"
           "  slimkit compress ~/.cache/slimkit/cnn-* --max-drop 1% --objective bytes --trials 30 --out cnn-auto\n"
           "  slimkit compress MINILM_DIR --max-drop 1% --options int8,int4 --include 'encoder.*' --out minilm-auto")


def add_arguments(p) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", type=model_dir, nargs="?")
    p.add_argument("--out", help="folder for the steps, the final artifact (DIR/model) and the report")
    add_force(p)
    p.add_argument("--list", action="store_true", help="list the built-in recipes and exit")
    p.add_argument("--recipe", help="a recipe YAML file or the name of a built-in recipe")
    p.add_argument("--max-drop", metavar="DROP", help="search: largest quality loss allowed, e.g. 1%% (of the "
                   "metric, relative) or 0.01 (absolute)")
    p.add_argument("--objective", choices=["bytes", "latency"], default="bytes", help="search: what to minimise")
    p.add_argument("--trials", type=positive_int, default=20, help="search: Optuna trials (default 20)")
    p.add_argument("--pareto", action="store_true", help="search: NSGA-II over (objective, quality) instead of TPE")
    p.add_argument("--options", help="search: comma-separated per-layer options among channels25, channels50, "
                   "sparse50, sparse75, sparse90, lowrank50, lowrank25, int8, int4, int3, int2 (default: all)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="search: only layers whose name matches (fnmatch; repeatable, as in the other verbs; default: "
                        "every Linear/Conv2d of 1,024+ weights)")
    p.add_argument("--method", choices=["rtn", "gptq"], default="rtn",
                   help="search: weight-only rounding for models without convolutions (gptq: slower, tighter)")
    p.add_argument("--calib", choices=["digits", "pycorpus", "minilm"],
                   help="calibration data (default: the evaluation task)")
    p.add_argument("--eval", choices=["digits", "pycorpus", "minilm"], dest="task",
                   help="evaluation and training task (default: inferred from the model)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    claim_out(args, args.model_dir, owned=OUT_FILES, reuse=True)  # a re-run resumes in --out
    from slimkit.errors import UserInputError
    from slimkit.recipes import builtin_recipes

    if args.list:
        recipes = builtin_recipes()
        if args.json:
            print(json.dumps(recipes, indent=2))
        else:
            width = max(map(len, recipes))
            print("\n".join(f"{name:<{width}}  {text}" for name, text in recipes.items()))
        return 0
    if not args.model_dir or not args.out:
        raise UserInputError("give MODEL_DIR and --out (or --list for the built-in recipes)")
    if (args.recipe is None) == (args.max_drop is None):
        raise UserInputError("give either --recipe (run a recipe) or --max-drop (search for one), not both or neither")
    return _run_recipe(args) if args.recipe else _search(args)


def _run_recipe(args) -> int:
    from slimkit.evaluation.report import markdown_table
    from slimkit.io import load
    from slimkit.recipes import load_recipe, run_pipeline
    from slimkit.recipes.pipeline import MODEL_DIR

    recipe = load_recipe(args.recipe)
    result = run_pipeline(load(args.model_dir), recipe, args.out, task=args.task, calib=args.calib,
                          source=str(args.model_dir), threads=args.threads)
    if args.json:
        print(json.dumps({"recipe": recipe.to_dict(), **result.to_dict(), "out": args.out}, indent=2))
        return 0
    print(markdown_table([result.before, result.after]))
    resumed = sum(r["resumed"] for r in result.steps)
    print(f"\n{len(result.steps)} step(s), {resumed} resumed from {args.out}/steps; wrote {args.out}/{MODEL_DIR}")
    return 0


def parse_drop(text: str) -> tuple[float, bool]:
    """(amount, relative): "1%" is 1% of the baseline's metric, "0.01" an absolute change of the metric."""
    from slimkit.errors import UserInputError

    relative = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UserInputError(f"--max-drop {text!r}: give a number like 1% or 0.01") from None
    if not value >= 0:
        raise UserInputError(f"--max-drop {text!r}: a quality drop cannot be negative")
    return (value / 100 if relative else value), relative


def _search(args) -> int:
    from slimkit.io import load
    from slimkit.recipes.search import SearchConfig, search
    from slimkit.recipes.space import OPTIONS

    drop, relative = parse_drop(args.max_drop)
    options = tuple(o.strip() for o in args.options.split(",")) if args.options else OPTIONS
    config = SearchConfig(max_drop=drop, relative=relative, objective=args.objective, trials=args.trials,
                          pareto=args.pareto, method=args.method, options=options, include=tuple(args.include))
    result = search(load(args.model_dir), config, args.out, task=args.task, calib=args.calib,
                    source=str(args.model_dir), threads=args.threads)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0
