import json

import pytest

from slimkit.cli import main
from slimkit.io import load, save
from slimkit.models import ResNet, ResNetConfig
from slimkit.quantization import Int8Conv2d


@pytest.mark.slow  # two full evaluations (latency + memory) of the CNN
def test_static_activations_write_an_int8_artifact_and_print_the_manifest(capsys, tmp_path):
    save(ResNet(ResNetConfig(widths=(8, 16))), tmp_path / "cnn")
    code = main(["quantize", str(tmp_path / "cnn"), "--activations", "int8", "--mode", "static", "--observer",
                 "percentile", "--calib-batches", "2", "--out", str(tmp_path / "q"), "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["after"]["technique"] == "activation int8 static"
    layers = [e for e in report["manifest"] if e["technique"] == "activation int8 static"]
    assert len(layers) == 11 and all(e["format"] == "w8a8" for e in layers)
    assert isinstance(load(tmp_path / "q").stem[0], Int8Conv2d)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "nf4"], "--activations int8 runs int2..int8 weights, not nf4"),
    (["--smoothquant", "2"], "smoothquant alpha=2.0: must be in [0, 1]"),
    (["--mode", "static", "--observer", "kl"], "invalid choice: 'kl'"),
])
def test_activation_user_errors_exit_2_with_one_line(capsys, tmp_path, argv, message):
    save(ResNet(ResNetConfig(widths=(8, 16))), tmp_path / "cnn")
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["quantize", str(tmp_path / "cnn"), "--activations", "int8", *argv, "--out",
                               str(tmp_path / "q"), "--quiet"]))
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
