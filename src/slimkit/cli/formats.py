"""slimkit formats"""

from __future__ import annotations

import json

HELP = ("Table of every number format slimkit knows: bits, exponent/mantissa split, largest value, "
        "smallest normal, epsilon, and the SQNR measured on N(0,1) data.")
EXAMPLE = "example:\n  slimkit formats\n  slimkit formats --json"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args) -> int:
    from slimkit.formats import format_table

    rows = format_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return 0


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
