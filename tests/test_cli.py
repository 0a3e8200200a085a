import json

import pytest
import torch

from slimkit.cli import main
from slimkit.io import save
from slimkit.models import MLP
from tests.conftest import run_cli


@pytest.mark.parametrize("verb", [[], ["demo"], ["eval"], ["report"]])
def test_help_has_an_example(capsys, verb):
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_eval_prints_a_record_as_json(capsys, tmp_path):
    save(MLP(), tmp_path)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json", "--runs", "5", "--quiet")
    record = json.loads(out)
    assert code == 0 and record["task"] == "digits" and record["artifact_bytes"] > 0
    assert record["latency_runs"] == 5


@pytest.mark.parametrize("argv, message", [
    (["eval", "/no/such/dir"], "slimkit eval: error: /no/such/dir: no such directory"),
    (["eval", "x", "--runs", "2"], "a median needs at least 5 timed runs"),
    (["eval", "x", "--threads", "zero"], "'zero' is not a whole number"),
    (["eval", "x", "--task", "imagenet"], "invalid choice: 'imagenet'"),
    (["report", "/no/such/dir"], "records.json: missing"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_artifact_is_a_user_error(capsys, tmp_path):
    save(MLP(), tmp_path)
    (tmp_path / "slimkit.json").write_text("{")
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert code == 2 and "slimkit.json: not valid JSON" in err


def test_report_rejects_a_foreign_records_file(capsys, tmp_path):
    (tmp_path / "records.json").write_text('{"records": [{"bogus": 1}]}')
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "not a slimkit records file" in err


def test_eval_names_the_technique_of_a_quantized_artifact(capsys, tmp_path):
    from slimkit.quantization import WeightQuantConfig, quantize

    save(quantize(MLP(), WeightQuantConfig("int8", group_size=None)), tmp_path)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json", "--runs", "5", "--quiet")
    assert code == 0 and json.loads(out)["technique"] == "weight-only rtn"


def test_quantize_cli_passes_the_gptq_options(capsys, tmp_path, mlp_dir):
    """--static-groups/--mse-clip/--awq-scale reach WeightQuantConfig: the artifact equals the Python API's."""
    from slimkit.models.tasks import get_task
    from slimkit.io import load
    from slimkit.quantization import WeightQuantConfig, quantize

    flags = ("--static-groups", "--mse-clip", "--awq-scale")
    code, _, err = run_cli(capsys, "quantize", str(mlp_dir), "--weights", "int4", "--group-size", "32", "--method",
                           "gptq", *flags, "--calib", "digits", "--calib-batches", "2", "--keep-dequant",
                           "--out", str(tmp_path / "q"))
    assert code == 0, err
    config = WeightQuantConfig("int4", group_size=32, method="gptq", static_groups=True, mse_clip=True,
                               awq_scale=True, calib_samples=2)
    expected = quantize(load(mlp_dir), config, calib=get_task("digits").calibration(2)).state_dict()
    plain = quantize(load(mlp_dir), WeightQuantConfig("int4", group_size=32, method="gptq", calib_samples=2),
                     calib=get_task("digits").calibration(2)).state_dict()
    got = load(tmp_path / "q").state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert any(k not in plain or not torch.equal(plain[k], expected[k]) for k in expected)
