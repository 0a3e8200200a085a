"""Check a report as a browser shows it: a headless Chromium screenshot of report.html, and the page's
plots and tables all present and readable.

    python scripts/check_report.py slimkit-report [--screenshot shot.png]

Fails (exit 1, one line per problem) when a plot is missing or does not decode as an image, when the
records table lacks a row of records.json, when a record with per-layer timings has no per-layer table,
or when the screenshot is blank. Needs Chromium (``apt-get install chromium``) and Pillow (matplotlib's).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

PLOTS = ("pareto_bytes.png", "pareto_latency.png")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--hide-scrollbars")


class Page(HTMLParser):
    """The images (alt, src) and tables (class, rows) of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.tables: list[list] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("alt", ""), attrs.get("src", "")))
        elif tag == "table":
            self.tables.append([attrs.get("class", ""), 0])
        elif tag == "tr" and self.tables:
            self.tables[-1][1] += 1


def page_problems(report: Path) -> list[str]:
    from PIL import Image

    page = Page()
    page.feed((report / "report.html").read_text())
    problems = []
    images = dict(page.images)
    for name in PLOTS:
        src = images.get(name, "")
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"plot {name} is missing from report.html")
            continue
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        if min(image.size) < 300:
            problems.append(f"plot {name} is only {image.size[0]}x{image.size[1]} pixels")
    records = json.loads((report / "records.json").read_text())["records"]
    rows = [n - 1 for kind, n in page.tables if kind == "records"]  # less the header row
    if rows != [len(records)]:
        problems.append(f"the records table has {rows} rows; records.json holds {len(records)} records")
    with_layers = sum(1 for r in records if r.get("notes", {}).get("layers"))
    layer_tables = sum(1 for kind, _ in page.tables if kind == "layers")
    if layer_tables != with_layers:
        problems.append(f"{layer_tables} per-layer tables in report.html; {with_layers} records have per-layer timings")
    return problems


def screenshot(report: Path, out: Path, chromium: str) -> list[str]:
    """Screenshot report.html (1400 px wide, tall enough for the whole page); problems if it is blank."""
    from PIL import Image, ImageStat

    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,5000",
                        f"--screenshot={out}", (report / "report.html").resolve().as_uri()],
                       capture_output=True, timeout=120, check=False)
    if not out.exists():
        return [f"Chromium wrote no screenshot to {out}"]
    grey = Image.open(out).convert("L")
    if ImageStat.Stat(grey).stddev[0] < 5:
        return [f"the screenshot {out} is blank"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report folder (report.html, records.json)")
    parser.add_argument("--screenshot", type=Path, help="where to write it (default: REPORT/screenshot.png)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="the Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not args.chromium:
        print("check_report: no chromium on PATH; apt-get install chromium, or pass --chromium", file=sys.stderr)
        return 2
    problems = page_problems(args.report)
    problems += screenshot(args.report, args.screenshot or args.report / "screenshot.png", args.chromium)
    for problem in problems:
        print(f"check_report: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
