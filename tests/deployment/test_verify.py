"""Export checks: every target written and read back by its own reader (onnxruntime, transformers), the
verdict a check that can fail, and the command line's --check."""

import importlib.util

import pytest
import torch

import slimkit
from slimkit.cli import main
from slimkit.deployment import verify
from slimkit.models import MLP, MLPConfig
from slimkit.quantization import WeightQuantConfig

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


def _by_target(checks):
    return {c.target: c for c in checks}


@pytest.mark.slow  # four exports and four readers of a tiny Llama: ~10 s
def test_int4_g32_llama_matches_in_every_reader_that_holds_it(tiny_llama, tmp_path):
    model = slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32))
    checks = _by_target(verify.export_checks(model, tmp_path))
    for target in ("compressed-tensors", "gguf", "onnx"):
        assert checks[target].status == "matched", checks[target]
        assert float(checks[target].detail) < 1e-4  # the same codes and scales: float rounding only
        assert checks[target].bytes > 0
    assert checks["hf"].status == "refused" and "QuantLinear" in checks["hf"].detail


def test_a_reader_that_disagrees_is_reported_as_differs(tmp_path, monkeypatch):
    model = MLP(MLPConfig()).eval()
    monkeypatch.setattr(verify, "read_back", lambda out, target, inputs: verify.model_output(model, inputs) * 1.1)
    checks = _by_target(verify.export_checks(model, tmp_path, targets=("onnx",)))
    assert checks["onnx"].status == "differs" and float(checks["onnx"].detail) == pytest.approx(0.1, rel=1e-3)


def test_a_missing_reader_says_what_to_install_and_refusals_say_why(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    checks = _by_target(verify.export_checks(MLP(MLPConfig()).eval(), tmp_path))
    assert checks["onnx"].cell() == "no reader (pip install onnxruntime)"
    assert all(checks[t].status == "refused" for t in ("compressed-tensors", "gguf", "hf"))
    assert "not a transformers model" in checks["hf"].detail
    table = verify.checks_table({"mlp": list(checks.values())})
    assert table.splitlines()[0] == "| model | compressed-tensors | gguf | onnx | hf |"


def test_export_check_on_the_command_line(tiny_llama, tmp_path, capsys):
    slimkit.save(slimkit.quantize(tiny_llama, WeightQuantConfig("int8", group_size=32)), tmp_path / "m")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m"), "--to", "gguf", "--out", str(tmp_path / "g"), "--check"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("read back with transformers + gguf: "))
    assert line.startswith("read back with transformers + gguf: matched (largest difference / largest output ")
    assert float(line.split("largest output ")[1].split(",")[0]) < 1e-4  # the same codes: float rounding only


def test_probe_inputs_follow_the_models_example_input():
    model = MLP(MLPConfig()).eval()
    inputs = verify.probe_inputs(model)
    assert list(inputs) == ["x"] and inputs["x"].shape == model.example_input().shape
    assert torch.equal(inputs["x"], verify.probe_inputs(model)["x"])  # seeded


def test_a_structured_pruned_llama_matches_in_onnxruntime_and_transformers(tiny_llama, token_ids, tmp_path):
    # its layers are slimkit's PrunedLinear (an nn.Linear with fewer rows): the ONNX export refused them before
    from slimkit.pruning import PruneConfig

    slimkit.prune(tiny_llama, PruneConfig(structured=True, ratio=0.5), example_inputs=token_ids)
    checks = _by_target(verify.export_checks(tiny_llama, tmp_path, targets=("onnx", "hf")))
    assert checks["onnx"].status == "matched" and float(checks["onnx"].detail) < 1e-4  # float32 in both
    assert checks["hf"].cell() == "matched (0.0e+00)"
