import json

import pytest

from slimkit.io import load
from tests.conftest import run_cli


def test_prune_writes_a_smaller_artifact_and_reports_as_json(capsys, tmp_path, mlp_dir):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "prune", str(mlp_dir), "--sparsity", "0.9", "--scope", "global", "--finetune-steps",
                       "3", "--out", str(out_dir), "--json", "--quiet")
    result = json.loads(out)
    before, after = result["records"]
    assert code == 0 and after["artifact_bytes"] < 0.25 * before["artifact_bytes"]
    layers = [r for r in result["report"]["layers"] if not r["skipped"]]
    total = sum(r["before"] for r in layers)
    assert total - sum(r["after"] for r in layers) == round(0.9 * total)  # exactly, over all layers
    assert {e["technique"] for e in load(out_dir).__dict__["_slimkit_manifest"]} == {"pruning"}


def test_structured_prune_prints_the_table_and_the_clamp(capsys, tmp_path, mlp_dir):
    code, out, _ = run_cli(capsys, "prune", str(mlp_dir), "--structured", "--ratio", "0.5", "--out",
                       str(tmp_path / "half"), "--layers", "--quiet")
    assert code == 0 and "| net.1 | channels | 256 | 128 |" in out
    assert load(tmp_path / "half").net[1].out_features == 128


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.5"], r"sparsity=1.5 must lie in [0, 1)"),
    ([], "nothing to prune"),
    (["--structured", "--ratio", "0.5", "--method", "sparsegpt"], "not among the structured importances"),
])
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, mlp_dir, argv, message):
    code, _, err = run_cli(capsys, "prune", str(mlp_dir), "--out", str(tmp_path / "x"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
