import json

from slimkit.evaluation.record import EvalRecord
from slimkit.evaluation.report import _pareto_front, markdown_table, read_records, write_report


def rec(name, value, size, ms, baseline=None, task="digits"):
    return EvalRecord(name=name, task=task, technique="baseline" if baseline is None else "test",
                      metric="accuracy", value=value, higher_is_better=True, quality={"accuracy": value},
                      params=100, nonzero=90, artifact_bytes=size, latency_ms=ms, latency_batch=64,
                      latency_runs=7, threads=2, peak_memory_bytes=4096, baseline=baseline)


RECORDS = [rec("cnn", 0.99, 8000, 2.0), rec("cnn-small", 0.98, 2000, 1.0, "cnn"),
           rec("cnn-worse", 0.97, 4000, 3.0, "cnn")]


def test_table_shows_ratios_against_the_baseline():
    table = markdown_table(RECORDS)
    row = next(line for line in table.splitlines() if line.startswith("| cnn-small "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == ["0.9800", "-0.0100"]
    assert cells[9] == "4.00" and cells[11] == "2.00"  # 4x smaller, 2x faster


def test_pareto_front_matches_a_naive_definition():
    def dominated(r, others):
        return any(o.artifact_bytes <= r.artifact_bytes and o.value >= r.value and o is not r
                   and (o.artifact_bytes < r.artifact_bytes or o.value > r.value) for o in others)

    expected = {r.name for r in RECORDS if not dominated(r, RECORDS)}
    assert {r.name for r in _pareto_front(RECORDS, "artifact_bytes")} == expected == {"cnn", "cnn-small"}


def test_write_report_produces_all_files(tmp_path):
    paths = write_report(RECORDS + [rec("gpt", 2.3, 9000, 5.0, task="pycorpus")], tmp_path, machine="test box")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pareto_bytes.png", "pareto_latency.png", "records.json", "report.html", "report.md"]
    md = paths["report.md"].read_text()
    assert "| cnn-small | test | accuracy | 0.9800 | -0.0100 | — |" in md and "test box" in md
    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "<td>cnn-worse</td>" in html
    assert "src=\"http" not in html  # self-contained
    for png in ("pareto_bytes.png", "pareto_latency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records, title, machine = read_records(tmp_path)
    assert [r.to_dict() for r in records[:3]] == [r.to_dict() for r in RECORDS] and machine == "test box"
    assert json.loads(paths["records.json"].read_text())["title"] == title
