"""slimkit compress on MiniLM (a Hugging Face folder): a recipe and a search, judged by embedding fidelity."""

import json

import pytest

from tests.conftest import needs_minilm, run_cli

pytest.importorskip("optuna")

LAYER = "encoder.layer.5.attention.self.*"  # three 384x384 layers: enough to search, quick to measure


@needs_minilm
@pytest.mark.slow
def test_compress_runs_a_recipe_and_a_search_on_minilm(capsys, tmp_path):
    from slimkit.data.minilm import minilm_path
    from slimkit.io import load

    (tmp_path / "r.yaml").write_text(f"steps:\n  - quantize: {{format: int8, group_size: null, include: ['{LAYER}']}}\n")
    code, out, err = run_cli(capsys, "compress", str(minilm_path()), "--recipe", str(tmp_path / "r.yaml"),
                             "--out", str(tmp_path / "recipe"), "--json", "--quiet")
    assert code == 0, err
    report = json.loads(out)
    assert report["before"]["metric"] == "cosine_mean" and report["after"]["value"] > 0.999
    assert report["after"]["artifact_bytes"] < report["before"]["artifact_bytes"] - 3 * 384 * 384 * 2
    code, out, err = run_cli(capsys, "compress", str(minilm_path()), "--max-drop", "0.5%", "--options", "int8,int4",
                             "--include", LAYER, "--trials", "3", "--out", str(tmp_path / "auto"), "--json",
                             "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert result["met"] and result["after"]["value"] >= 0.995 * result["before"]["value"]
    assert result["after"]["artifact_bytes"] < report["after"]["artifact_bytes"]  # int4 somewhere beats all-int8
    assert set(result["sensitivity"]) == {f"encoder.layer.5.attention.self.{n}" for n in ("query", "key", "value")}
    model = load(tmp_path / "auto" / "model")
    assert type(model).__name__ == "BertModel"  # a transformers model stays one
