"""slimkit report"""

from __future__ import annotations

import json
from pathlib import Path

HELP = ("Rebuild report.md, report.html and the Pareto plots from RUN_DIR/records.json "
        "(the folder `slimkit demo` writes).")
EXAMPLE = "example:\n  slimkit report slimkit-report      # rebuild report.md/.html/PNGs from records.json"


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write (default: RUN_DIR itself)")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")


def run(args) -> int:
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
