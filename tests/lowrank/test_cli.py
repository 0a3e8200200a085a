import json

import pytest

from slimkit.cli import main
from slimkit.io import load
from slimkit.lowrank import LowRankLinear
from tests.conftest import run_cli


def test_factorize_writes_an_artifact_and_reports_as_json(capsys, tmp_path, mlp_dir):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "factorize", str(mlp_dir), "--param-budget", "0.5", "--exclude", "net.5",
                       "--out", str(out_dir), "--json", "--quiet")
    result = json.loads(out)
    assert code == 0 and [r["name"] for r in result["records"]] == ["before", "after low-rank (param_budget=0.5)"]
    assert result["report"]["params_after"] <= 0.5 * result["report"]["params_before"]
    assert result["records"][1]["params"] < result["records"][0]["params"]
    layers = {r["layer"]: r for r in result["report"]["layers"]}
    assert layers["net.5"]["skipped"] == "matched by exclude ['net.5']"
    assert isinstance(load(out_dir).net[1], LowRankLinear)


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["factorize", "--help"])
    assert info.value.code == 0 and "example:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--energy", "1.5"], "slimkit factorize: error: energy=1.5: must lie in (0, 1]"),
    (["--energy", "0"], "slimkit factorize: error: energy=0.0: must lie in (0, 1]"),
    (["--rank", "0"], "argument --rank: 0 must be at least 1"),
    (["--rank", "2", "--energy", "0.5"], "argument --energy: not allowed with argument --rank"),
    ([], "one of the arguments --energy --rank --param-budget is required"),
    (["--rank", "2", "--include", "fc*"], "include pattern 'fc*' matches no Linear or Conv2d layer; closest names: "),
    (["--rank", "2", "--finetune", "-1"], "--finetune -1: the number of steps cannot be negative"),
])
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, mlp_dir, argv, message):
    code, out, err = run_cli(capsys, "factorize", str(mlp_dir), "--out", str(tmp_path / "o"), *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and not out


def test_missing_model_dir_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "factorize", "/no/such/dir", "--rank", "2", "--out", str(tmp_path / "o"))
    assert code == 2 and err == "slimkit factorize: error: /no/such/dir: no such directory; pass the folder that " \
        "slimkit.save wrote\n"
