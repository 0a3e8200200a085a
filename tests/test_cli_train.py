import json

import pytest
import torch

from slimkit.cli import main
from slimkit.io import load
from tests.conftest import run_cli


def test_train_prints_json_saves_and_resumes(capsys, tmp_path):
    common = ["train", "--model", "mlp", "--scratch", "--lr", "3e-3", "--batch-size", "64", "--quiet",
              "--checkpoint-dir", str(tmp_path / "ckpt"), "--json"]
    code, out, _ = run_cli(capsys, *common, "--steps", "40", "--out", str(tmp_path / "model"))
    first = json.loads(out)
    assert code == 0 and first["steps"] == 40 and first["data"] == "digits"
    assert first["quality_after"]["accuracy"] > first["quality_before"]["accuracy"] + 0.5
    assert first["trainable_parameters"] == first["parameters"]
    model = load(tmp_path / "model")
    x = torch.randn(3, 64)
    assert model(x).shape == (3, 10)
    code, out, _ = run_cli(capsys, *common, "--steps", "50", "--resume")  # ten more steps from the checkpoint
    assert code == 0 and json.loads(out)["steps"] == 50


def test_train_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0 and "example:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "resume=True needs checkpoint_dir"),
    (["--warmup", "500"], "warmup=500 must be in [0, steps=200)"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--data", "pycorpus"], "pycorpus training needs a language model with config.block_size, not MLP"),
])
def test_train_user_errors_exit_2_with_one_line(capsys, argv, message):
    try:
        code = main(["train", "--model", "mlp", "--scratch", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_saved_lora_model_trains_only_its_adapters_again(capsys, tmp_path):
    common = ["train", "--scratch", "--steps", "2", "--quiet", "--json", "--batch-size", "2"]
    code, out, _ = run_cli(capsys, *common, "--model", "gpt", "--lora", "r=4,targets=blocks.0.*",
                       "--out", str(tmp_path / "lora"))
    first = json.loads(out)
    assert code == 0 and first["trainable_parameters"] < first["parameters"] / 50
    code, out, _ = run_cli(capsys, *common, "--model", str(tmp_path / "lora"))
    assert code == 0 and json.loads(out)["trainable_parameters"] == first["trainable_parameters"]
