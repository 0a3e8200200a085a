"""report.html holds every plot, the records table and the per-layer tables; scripts/check_report.py's page
check finds a missing one (its Chromium screenshot is run by hand: python scripts/check_report.py DIR)."""

import dataclasses
import importlib.util
from pathlib import Path

from slimkit.evaluation.report import write_report
from tests.evaluation.test_report import RECORDS

SCRIPT = Path(__file__).parents[2] / "scripts" / "check_report.py"
LAYERS = [{"layer": "fc", "paths": [[None, "int8pack"]], "speedup_vs_float": {"1": {"int8pack": 1.5}},
           "paired_vs_float": {"1": {"median": 1.5, "q1": 1.4, "q3": 1.6, "noisy": False}}}]


def _checker():
    spec = importlib.util.spec_from_file_location("check_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_holds_every_plot_and_table_and_the_check_sees_a_missing_one(tmp_path):
    records = [*RECORDS[:2], dataclasses.replace(RECORDS[2], notes={"layers": LAYERS})]
    paths = write_report(records, tmp_path)
    check = _checker()
    assert check.page_problems(tmp_path) == []
    page = paths["report.html"].read_text()
    assert "<h3>cnn-worse: per-layer speed" in page and "<td>1.50 (1.40–1.60)</td>" in page
    paths["report.html"].write_text(page.replace('alt="pareto_latency.png"', 'alt="gone"')
                                    .replace("<table class='layers'>", "<table>"))
    assert check.page_problems(tmp_path) == ["plot pareto_latency.png is missing from report.html",
                                             "0 per-layer tables in report.html; 1 records have per-layer timings"]


def test_labels_sit_in_a_column_with_leader_lines_and_ticks_are_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimkit.evaluation.report import _label_column, _log_ticks, _short_number

    fig, ax = plt.subplots()
    close = [dataclasses.replace(RECORDS[1], name=f"v{i}", value=0.98 + i * 1e-5) for i in range(5)]  # 5 dots in one spot
    ax.scatter([r.artifact_bytes for r in close], [r.value for r in close])
    ax.set_xscale("log")
    _log_ticks(ax)
    _label_column(ax, close, "artifact_bytes")
    heights = sorted(t.get_position()[1] for t in ax.texts)
    assert all(b - a >= 0.07 - 1e-9 for a, b in zip(heights, heights[1:]))  # one line apart: no overlap
    assert all(t.arrow_patch is not None for t in ax.texts)
    plt.close(fig)
    assert [_short_number(v) for v in (0.05, 2, 20000, 3_340_000)] == ["0.05", "2", "20k", "3.34M"]
