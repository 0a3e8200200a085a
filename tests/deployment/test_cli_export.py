"""slimkit export on the command line: writes the folder, refuses an existing --out, leaves nothing on failure."""

import pytest

import slimkit
from slimkit.cli import main
from slimkit.quantization import WeightQuantConfig

pytest.importorskip("transformers")


def test_export_writes_refuses_existing_out_and_replaces_with_force(tiny_llama, tmp_path, capsys):
    slimkit.save(slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32)), tmp_path / "model")
    out = tmp_path / "ct"
    capsys.readouterr()
    assert main(["export", str(tmp_path / "model"), "--to", "compressed-tensors", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    assert f"wrote {out} (compressed-tensors" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "model"), "--to", "compressed-tensors", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; choose another --out or pass --force" in err
    assert main(["export", str(tmp_path / "model"), "--to", "compressed-tensors", "--out", str(out), "--force"]) == 0


def test_refused_export_is_one_line_and_leaves_nothing(tiny_llama, tmp_path, capsys):
    slimkit.save(slimkit.quantize(tiny_llama, WeightQuantConfig("nf4", group_size=32)), tmp_path / "model")
    capsys.readouterr()  # the quantization's progress lines
    assert main(["export", str(tmp_path / "model"), "--to", "compressed-tensors", "--out", str(tmp_path / "ct")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nf4, which compressed-tensors cannot store exactly" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
