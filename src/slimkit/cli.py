"""The ``slimkit`` command line. Every verb has --help with an example; user errors exit 2."""

from __future__ import annotations

import argparse
import json
import sys
import time

from slimkit.errors import SlimkitError

EXAMPLES = {
    "demo": "example:\n  slimkit demo                 # train/load, measure, write slimkit-report/\n"
            "  slimkit demo --retrain --out /tmp/report",
    "eval": "example:\n  slimkit eval slimkit-report/artifacts/cnn --json\n"
            "  slimkit eval path/to/hf-bert-folder --task minilm",
    "report": "example:\n  slimkit report slimkit-report      # rebuild report.md/.html/PNGs from records.json",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slimkit", description="Make neural networks smaller, faster and cheaper, "
                     "and measure what it really saved.", formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="example:\n  slimkit demo\n  slimkit eval slimkit-report/artifacts/gpt --json")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    demo = verb("demo", "Train or load the reference models on the embedded data, measure them "
                "(and MiniLM when installed), print the table and write the report folder.")
    demo.add_argument("--out", default="slimkit-report", help="report folder (default: slimkit-report)")
    demo.add_argument("--retrain", action="store_true", help="retrain the reference models, ignoring the cache")
    demo.add_argument("--no-minilm", action="store_true", help="skip the MiniLM rows")
    demo.add_argument("--threads", type=_positive_int, default=2, help="torch threads for latency (default 2)")
    demo.add_argument("--json", action="store_true", help="print the records as JSON instead of the table")

    ev = verb("eval", "Measure a saved model: quality, parameters, nonzeros, artifact bytes, latency, "
              "peak memory. MODEL_DIR is a slimkit artifact or a Hugging Face model folder.")
    ev.add_argument("model_dir", metavar="MODEL_DIR")
    ev.add_argument("--task", choices=["digits", "pycorpus", "minilm"],
                    help="task to evaluate on (default: inferred from the model)")
    ev.add_argument("--batch", type=_positive_int, help="batch size of the timed call (default per task)")
    ev.add_argument("--threads", type=_positive_int, default=2, help="torch threads (default 2)")
    ev.add_argument("--runs", type=_runs, default=7, help="timed runs, median reported (>= 5, default 7)")
    ev.add_argument("--json", action="store_true", help="print the record as JSON")

    rep = verb("report", "Rebuild report.md, report.html and the Pareto plots from RUN_DIR/records.json "
               "(the folder `slimkit demo` writes).")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--out", help="where to write (default: RUN_DIR itself)")
    rep.add_argument("--json", action="store_true", help="print the written paths as JSON")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _runs(text: str) -> int:
    value = _positive_int(text)
    if value < 5:
        raise argparse.ArgumentTypeError(f"{value}: a median needs at least 5 timed runs")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from slimkit.progress import set_quiet

    set_quiet(args.quiet)
    try:
        return {"demo": _demo, "eval": _eval, "report": _report}[args.verb](args)
    except SlimkitError as exc:
        sys.stderr.write(f"slimkit {args.verb}: error: {exc}\n")
        return 2


def _demo(args) -> int:
    from slimkit.demo import run_demo
    from slimkit.evaluation.report import markdown_table

    start = time.perf_counter()
    records, paths, skipped = run_demo(args.out, retrain=args.retrain, minilm_rows=not args.no_minilm,
                                       threads=args.threads)
    if args.json:
        print(json.dumps({"records": [r.to_dict() for r in records], "skipped": skipped,
                          "seconds": round(time.perf_counter() - start, 1)}, indent=2))
        return 0
    print(markdown_table(records))
    for note in skipped:
        print(note)
    print(f"\nreport: {paths['report.md']} and {paths['report.html']} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


def _eval(args) -> int:
    from slimkit.evaluation import evaluate
    from slimkit.evaluation.report import markdown_table
    from slimkit.io import load

    model = load(args.model_dir)
    record = evaluate(model, args.task, name=args.model_dir, artifact_dir=args.model_dir,
                      batch_size=args.batch, threads=args.threads, runs=args.runs)
    print(json.dumps(record.to_dict(), indent=2) if args.json else markdown_table([record]))
    return 0


def _report(args) -> int:
    from pathlib import Path

    from slimkit.errors import UserInputError
    from slimkit.evaluation.report import read_records, write_report

    records_file = Path(args.run_dir) / "records.json"
    if not records_file.is_file():
        raise UserInputError(f"{records_file}: missing; pass a folder written by `slimkit demo`")
    try:
        records, title, machine = read_records(args.run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{records_file}: not a slimkit records file ({exc})") from None
    paths = write_report(records, args.out or args.run_dir, title=title or "slimkit report", machine=machine)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2) if args.json
          else "\n".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
