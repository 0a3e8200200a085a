"""ONNX export, run by onnxruntime's CPU provider: weight-only int4/int8 layers as com.microsoft::MatMulNBits
and quantized embeddings as GatherBlockQuantized give slimkit's outputs to float rounding; int8 activations
(DynamicQuantizeLinear + MatMulInteger) stay close to slimkit and fp32."""

import copy
import warnings

import numpy as np
import pytest
import torch

import slimkit
from slimkit.deployment import ExportRefused
from slimkit.quantization import WeightQuantConfig

onnx = pytest.importorskip("onnx", reason="onnx (test extra) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (test extra) is not installed")
transformers = pytest.importorskip("transformers")


def _run(folder, feeds):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feeds.items()})[0])


def _ops(folder):
    return [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_layers_run_as_matmulnbits_with_slimkits_logits(tiny_llama, token_ids, tmp_path, symmetric):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, symmetric=symmetric))
    folder = slimkit.export(tiny_llama, tmp_path / "onnx", to="onnx")
    assert _ops(folder).count("MatMulNBits") == 2 * 7 + 1  # every projection and the output layer
    feeds = {"input_ids": token_ids, "attention_mask": torch.ones_like(token_ids)}
    with torch.no_grad():
        expected = tiny_llama(**feeds).logits
    # MatMulNBits decodes the same codes and scales; only float32 summation order differs (K <= 128 products
    # of size ~0.1: a few ulps of the logits, far below 1e-5)
    assert (_run(folder, feeds) - expected).abs().max() < 1e-5


@pytest.mark.slow  # a calibrated method or a 256-wide model: seconds, not milliseconds
def test_awq_input_scale_becomes_a_division(tiny_llama, token_ids, tmp_path):
    calib = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, method="awq", awq_grid=4), calib=calib)
    assert any(m.input_scale is not None for m in tiny_llama.modules() if hasattr(m, "input_scale"))
    folder = slimkit.export(tiny_llama, tmp_path / "onnx", to="onnx")
    feeds = {"input_ids": token_ids, "attention_mask": torch.ones_like(token_ids)}
    with torch.no_grad():
        expected = tiny_llama(**feeds).logits
    # (x / s) W^T against x (W / s)^T: the same products rounded in another order, a few float32 ulps
    assert (_run(folder, feeds) - expected).abs().max() < 1e-5


def _bert():
    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=32, dtype="float32")
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(2))
    return transformers.BertModel(config).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("fmt,group_size,symmetric", [("int8", None, True), ("int8", 16, False),
                                                      ("int4", None, False), ("int4", 16, True)])
def test_weight_only_layers_and_embeddings_are_exact_in_onnxruntime(tmp_path, fmt, group_size, symmetric):
    # MatMulNBits (bits 4 or 8) and GatherBlockQuantized decode slimkit's codes, scales and zero points; a
    # channel's scale is repeated over blocks of the input width (the largest power of two dividing it)
    fp32, feeds = _bert()
    model = slimkit.quantize(copy.deepcopy(fp32), WeightQuantConfig(fmt, group_size=group_size, symmetric=symmetric,
                                                                   embeddings=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "written approximately" warning: every layer is exact
        warnings.filterwarnings("ignore", message="Exporting aten::index")  # transformers' mask code, traced
        folder = slimkit.export(model, tmp_path / "onnx", to="onnx")
    ops = _ops(folder)
    assert ops.count("MatMulNBits") == 2 * 6 and ops.count("GatherBlockQuantized") == 3  # word, position, type
    assert "MatMulInteger" not in ops
    with torch.no_grad():
        expected = model(**feeds)[0]
    # the same codes and scales; float32 summation order only (|hidden| ~ 1, 128-term sums)
    assert (_run(folder, feeds) - expected).abs().max() < 1e-5


def test_int8_activations_run_as_dynamic_matmulinteger(tmp_path):
    from slimkit.quantization.activation import ActivationQuantConfig

    fp32, feeds = _bert()
    model = slimkit.quantize(copy.deepcopy(fp32), ActivationQuantConfig(mode="dynamic"))
    folder = slimkit.export(model, tmp_path / "onnx", to="onnx")
    assert not any(m.training for m in model.modules())  # exporting left the model in eval mode (dropout off)
    assert _ops(folder).count("MatMulInteger") == 2 * 6  # q, k, v, out, up, down per layer (the pooler is not traced)
    got = _run(folder, feeds)
    with torch.no_grad():
        ours, reference = model(**feeds)[0], fp32(**feeds)[0]
    cosine = torch.nn.functional.cosine_similarity
    # onnxruntime quantizes activations per tensor to uint8 where slimkit's Int8Linear uses one scale per
    # token: one rounding step of 1/255 of each input's range per element keeps the cosine > 0.999
    assert cosine(got.flatten(1), ours.flatten(1)).min() > 0.999
    assert cosine(got.flatten(1), reference.flatten(1)).min() > 0.999


def test_weight_only_int8_over_a_width_no_block_divides_is_written_close_and_warned(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(40, 24), torch.nn.ReLU(), torch.nn.Linear(24, 8)).eval()
    slimkit.quantize(model, WeightQuantConfig("int8", group_size=None))
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    tmp_path.joinpath("onnx").mkdir()
    from slimkit.deployment.onnx import write_onnx

    with pytest.warns(UserWarning, match="2 weight-only int8 layers .* also quantizes their inputs"):
        write_onnx(model, tmp_path / "onnx", {"x": x})
    assert _ops(tmp_path / "onnx").count("MatMulInteger") == 2
    with torch.no_grad():
        expected = model(x)
    assert torch.nn.functional.cosine_similarity(_run(tmp_path / "onnx", {"x": x}), expected).min() > 0.999


def test_refusals(tiny_llama, tmp_path):
    int4 = slimkit.quantize(copy.deepcopy(tiny_llama), WeightQuantConfig("int4", group_size=32))
    int3 = slimkit.quantize(copy.deepcopy(tiny_llama), WeightQuantConfig("int3", group_size=32))
    int4.model.layers[1].mlp.down_proj = int3.model.layers[1].mlp.down_proj  # refused after 12 layers were swapped
    layers = dict(int4.named_modules())
    with pytest.raises(ExportRefused, match="down_proj' \\(int3, group 32\\) over 128 inputs has no exact ONNX"):
        slimkit.export(int4, tmp_path / "c", to="onnx")
    assert all(module is layers[name] for name, module in int4.named_modules())  # every layer put back
    with pytest.raises(ExportRefused, match="no exact ONNX pattern"):
        slimkit.export(int3, tmp_path / "a", to="onnx")
    with pytest.raises(ExportRefused, match="needs an example input"):
        slimkit.export(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "b", to="onnx")
    assert list(tmp_path.iterdir()) == []
    assert np.isfinite(tiny_llama.model.embed_tokens.weight.detach().numpy()).all()  # the model is left intact


def test_slimkit_gpt_exports_with_an_example_input(tmp_path):
    from slimkit.deployment.onnx import write_onnx
    from slimkit.models import GPT, GPTConfig

    model = slimkit.quantize(GPT(GPTConfig()).eval(), WeightQuantConfig("int4", group_size=32))
    idx = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))
    tmp_path.joinpath("onnx").mkdir()
    write_onnx(model, tmp_path / "onnx", {"idx": idx})
    assert "MatMulNBits" in _ops(tmp_path / "onnx")
    with torch.no_grad():
        expected = model(idx)
    # the same codes and scales decoded by MatMulNBits; float32 summation order only
    assert (_run(tmp_path / "onnx", {"idx": idx}) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("relu", [True, False])
def test_static_int8_convolutions_and_linears_run_as_qdq_on_slimkits_grid(tmp_path, relu):
    from slimkit.deployment.onnx import write_onnx
    from slimkit.quantization.activation import ActivationQuantConfig

    torch.manual_seed(0)
    act = torch.nn.ReLU() if relu else torch.nn.Identity()  # with ReLU the convolutions fuse it
    fp32 = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), act, torch.nn.Conv2d(8, 8, 3, stride=2, groups=2),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 10)).eval()
    calib = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    model = slimkit.quantize(copy.deepcopy(fp32), ActivationQuantConfig(mode="static"), calib=calib)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    tmp_path.joinpath("onnx").mkdir()
    write_onnx(model, tmp_path / "onnx", {"x": x})
    ops = _ops(tmp_path / "onnx")
    assert ops.count("QuantizeLinear") == 3 and ops.count("Conv") == 2 and "MatMulInteger" not in ops
    got = _run(tmp_path / "onnx", {"x": x})
    with torch.no_grad():
        ours, reference = model(x), fp32(x)
    # the same uint8/int8 grids and int8 weights (slimkit's output equals a float emulation of that grid to
    # 5e-7); onnxruntime fuses a Conv between QDQ pairs into an int8 convolution that requantizes its output
    # with its own rounding, so an intermediate code may land one grid step away: measured 2.5e-3 of the
    # largest output with the fused ReLU, 1e-8 without
    assert (got - ours).abs().max() < 1e-2 * ours.abs().max()
    assert torch.nn.functional.cosine_similarity(got, ours).min() > 0.9999
    assert torch.nn.functional.cosine_similarity(got, reference).min() > 0.99
