"""``slimkit demo``: train or load the reference models, measure them, and write the report.

Each technique adds its rows in ``technique_rows`` below, measured against the baseline row of
the same model, so the report always shows what a technique saved next to what it started from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from slimkit.data.minilm import minilm
from slimkit.errors import MissingDependencyError
from slimkit.evaluation import EvalRecord, evaluate
from slimkit.evaluation.report import write_report
from slimkit.io import save
from slimkit.models import zoo
from slimkit.progress import progress


def machine_line(threads: int) -> str:
    """One line describing the machine, as every report and benchmark table starts with."""
    return (f"{_cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores), {threads} torch "
            f"thread(s), Python {platform.python_version()}, torch {torch.__version__}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_demo(out_dir: str | Path = "slimkit-report", *, retrain: bool = False, minilm_rows: bool = True,
             threads: int = 2) -> tuple[list[EvalRecord], dict[str, Path], list[str]]:
    """Run the demo; returns the records, the report files written, and notes on what was skipped."""
    out = Path(out_dir)
    records, skipped = [], []
    steps = [*zoo.NAMES, "minilm"] if minilm_rows else list(zoo.NAMES)
    with progress(steps, desc="demo", unit="model") as bar:
        for name in bar:
            bar.set_postfix_str(name)
            try:
                model = minilm().model if name == "minilm" else zoo.reference(name, retrain=retrain)
            except MissingDependencyError as exc:
                skipped.append(f"minilm skipped: {exc}")
                continue
            artifact = save(model, out / "artifacts" / name)
            records.append(evaluate(model, name=name, artifact_dir=artifact, threads=threads))
    paths = write_report(records, out, title="slimkit demo", machine=machine_line(threads))
    return records, paths, skipped
