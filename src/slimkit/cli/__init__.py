"""The ``slimkit`` command line: one module per verb, each with ``add_parser`` and ``run``.

Every verb has --help with an example and --quiet; user errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from slimkit.errors import SlimkitError

VERBS = ("demo", "eval", "report", "quantize", "formats", "train", "memory", "distill", "factorize", "privacy", "federated", "prune", "compress", "export")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option with a default says it (unless its help already does)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default" in text or action.option_strings == [] or \
                default in (None, False, [], (), argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def model_dir(text: str) -> str:
    """MODEL_DIR as given, or for a pretrained zoo model's name ("smollm2") its Hugging Face folder in the cache
    (converted the first time), unless a folder of that name exists here."""
    from pathlib import Path

    from slimkit.models import zoo

    if text in zoo.PRETRAINED and not Path(text).exists():
        return str(zoo.hf_folder(text))
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def timed_runs(text: str) -> int:
    value = positive_int(text)
    if value < 5:
        raise argparse.ArgumentTypeError(f"{value}: a median needs at least 5 timed runs")
    return value


def layer_patterns(p: argparse.ArgumentParser) -> None:
    """--include/--exclude PATTERN, the same for every verb that chooses layers by name."""
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="only layers whose name matches (fnmatch; repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out layers whose name matches (fnmatch; repeatable)")


def task_arguments(p: argparse.ArgumentParser, purpose: str = "task to evaluate on") -> None:
    """--task and --data, the same for every verb that measures a model."""
    p.add_argument("--task", choices=["digits", "pycorpus", "minilm", "smollm2", "causal-lm", "encoder", "classifier"],
                   help=f"{purpose} (default: inferred; a Hugging Face folder's from its config's architecture: "
                        "causal-lm perplexity, encoder embedding cosine, classifier agreement with the float model)")
    p.add_argument("--data", metavar="FILE", help="Hugging Face models: your own data for calibration and evaluation "
                   "(plain text for causal LMs, one sentence per line for encoders, JSON lines with text and label "
                   "for classifiers; the last 20%% held out for evaluation)")


def _verb_module(verb: str):
    import importlib

    return importlib.import_module(f"slimkit.cli.{'evaluate' if verb == 'eval' else verb}")


def build_parser() -> argparse.ArgumentParser:
    from slimkit import __version__

    parser = Parser(prog="slimkit", description="Make neural networks smaller, faster and cheaper, "
                    "and measure what it really saved.", formatter_class=HelpFormatter,
                    epilog="example:\n  slimkit demo\n  slimkit eval slimkit-report/artifacts/gpt --json")
    parser.add_argument("--version", action="version", version=f"slimkit {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for verb in VERBS:
        module = _verb_module(verb)
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP, epilog=module.EXAMPLE,
                           formatter_class=HelpFormatter)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from slimkit.progress import set_quiet

    set_quiet(args.quiet)
    if getattr(args, "seed", None) is not None:
        _seed_everything(args.seed)
    try:
        code = _verb_module(args.verb).run(args)
        sys.stdout.flush()  # here, so that a closed pipe is seen inside the try
        return code
    except SlimkitError as exc:
        sys.stderr.write(f"slimkit {args.verb}: error: {exc}\n")
        return 2
    except BrokenPipeError:  # the reader left (``slimkit compress --list | head``): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # what a shell reports for a process killed by SIGPIPE (128 + 13)
    finally:
        from slimkit.cli.output import release

        release()  # the --out locks the verb took


def _seed_everything(seed: int) -> None:
    """One ``--seed`` for everything random in the run, not only what a verb seeds itself: LoRA adapters
    injected into a saved model, dropout, random probes (torch, Python's random, NumPy)."""
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
