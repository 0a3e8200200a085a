"""Progress without a terminal: a status line per stage with the elapsed time; nothing in quiet mode."""

import io

from slimkit import progress as progress_module
import pytest

from slimkit.progress import StatusLines, progress, set_quiet


@pytest.fixture(autouse=True)
def not_quiet(monkeypatch):
    """Each test starts out of quiet mode (a CLI test run with --quiet before leaves it set)."""
    monkeypatch.setattr(progress_module, "_QUIET", False)


def test_piped_output_gets_a_line_per_stage_and_named_item(monkeypatch):
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(progress_module.sys, "stderr", err)
    with progress(["mlp", "mlp-int8"], desc="demo", unit="row") as bar:
        for name in bar:
            bar.set_postfix_str(name)
    lines = err.getvalue().splitlines()
    assert lines[0] == "slimkit: demo: 2 rows"
    assert lines[1].startswith("slimkit: demo: mlp (0/2 rows, ") and lines[2].startswith("slimkit: demo: mlp-int8 (1/2")
    assert lines[3].startswith("slimkit: demo: done: 2 rows in ") and lines[3].endswith(" s") and len(lines) == 4


def test_long_stages_report_their_position_at_most_every_few_seconds(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", err)
    monkeypatch.setattr(StatusLines, "EVERY_S", 0.0)
    bar = progress(range(2), total=2, desc="training", unit="step")
    for _ in bar:
        bar.set_postfix(loss="1.2345")
    assert "slimkit: training: 1/2 steps, " in err.getvalue() and "(loss=1.2345)" in err.getvalue()


def test_quiet_prints_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", err)
    set_quiet(True)
    try:
        list(progress(range(3), desc="quantizing"))
    finally:
        set_quiet(False)
    assert err.getvalue() == ""
