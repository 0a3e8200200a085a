import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit import load, save
from slimkit.formats import dequantize, quantize
from slimkit.quantization.activation import kernels
from slimkit.quantization.activation.modules import Int8Conv2d, Int8Linear, encode_weight
from tests.reference.activation import int8_linear_per_token


def test_int8_matmul_equals_the_integer_product_exactly():
    a = torch.randint(-127, 128, (37, 300), dtype=torch.int8)
    b = torch.randint(-127, 128, (300, 19), dtype=torch.int8)
    expected = a.long() @ b.long()
    assert torch.equal(kernels.int8_matmul(a, b).long(), expected)
    assert torch.equal(kernels.int8_matmul(a[:5], b.t().contiguous().t()).long(), expected[:5])


def test_int_mm_constraints_are_reported_for_cuda_shapes_only():
    a, b = torch.zeros(4, 12, dtype=torch.int8), torch.zeros(12, 4, dtype=torch.int8)
    assert kernels.int_mm_fits(a, b) is None  # CPU: any shape


def test_dynamic_int8_linear_matches_the_naive_per_token_reference():
    layer = nn.Linear(48, 24)
    x = torch.randn(2, 5, 48) * torch.linspace(0.1, 4, 48)
    module = Int8Linear(encode_weight(layer.weight, 8), layer.bias)
    expected = int8_linear_per_token(x.reshape(-1, 48), layer.weight.detach(), layer.bias.detach())
    torch.testing.assert_close(module(x).reshape(-1, 24), expected, rtol=1e-5, atol=1e-5)


def test_static_int8_linear_clips_at_the_calibrated_scale():
    layer = nn.Linear(16, 8)
    scale = torch.tensor(0.01)
    module = Int8Linear(encode_weight(layer.weight, 8), layer.bias, mode="static", act_scale=scale)
    x = torch.randn(20, 16)
    x_fq = torch.round(x / scale).clamp(-127, 127) * scale
    w = dequantize(quantize(layer.weight.detach(), "int8", granularity="channel"))
    torch.testing.assert_close(module(x), F.linear(x_fq, w, layer.bias), rtol=1e-5, atol=1e-5)


def test_int8_conv_matches_the_float_conv_of_the_same_integers():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    x = torch.rand(4, 8, 9, 9) * 3
    scale, zero = torch.tensor(3 / 255), torch.tensor(0.0)
    module = Int8Conv2d(encode_weight(conv.weight, 8), conv.bias, act_scale=scale, act_zero_point=zero,
                        stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=1, relu=True)
    x_fq = torch.clamp(torch.round(x / scale) + zero, 0, 255).sub(zero) * scale
    w = dequantize(quantize(conv.weight.detach(), "int8", granularity="channel"))
    expected = F.relu(F.conv2d(x_fq, w, conv.bias, 2, 1))
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


def test_int4_weights_are_stored_packed_and_run_on_the_int8_kernel():
    layer = nn.Linear(64, 32)
    module = Int8Linear(encode_weight(layer.weight, 4), layer.bias)
    assert module.state_dict()["w_codes"].numel() == 64 * 32 // 2  # saved packed; held as the int8 layout
    w4 = dequantize(quantize(layer.weight.detach(), "int4", granularity="channel"))
    x = torch.randn(8, 64)
    err = (module(x) - F.linear(x, w4, layer.bias)).abs().max() / F.linear(x, w4, layer.bias).abs().max()
    assert err < 0.02  # only the int8 activation rounding differs


def test_outlier_columns_are_computed_in_float():
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    x = torch.randn(64, 32)
    x[:, 5] *= 200  # one outlier feature, as in LLM.int8()
    w = layer.weight.detach()
    index = torch.tensor([5])
    plain = Int8Linear(encode_weight(w, 8), layer.bias)
    split = Int8Linear(encode_weight(w.index_fill(1, index, 0.0), 8), layer.bias, outlier_index=index,
                       outlier_weight=w[:, index].clone())
    reference = layer(x)
    assert (split(x) - reference).abs().max() < 0.2 * (plain(x) - reference).abs().max()


@pytest.mark.slow
def test_compiled_chains_equal_the_eager_ones():
    rows = kernels.COMPILE_MIN_ELEMENTS // 64
    x, acc = torch.randn(rows, 96), torch.randint(-5000, 5000, (rows, 384), dtype=torch.int32)
    row, col, bias = torch.rand(rows, 1), torch.rand(384), torch.randn(384)
    eager = (kernels.quantize_tokens(x), kernels.rescale(acc, row, col, bias, True))
    kernels.set_compiled(True)
    compiled = (kernels.quantize_tokens(x.clone()), kernels.rescale(acc, row, col, bias, True))
    assert kernels.compile_failure() is None
    assert torch.equal(eager[0][0], compiled[0][0])
    torch.testing.assert_close(eager[0][1], compiled[0][1])
    torch.testing.assert_close(eager[1], compiled[1])


def test_modules_round_trip_through_save_and_load(tmp_path):
    from slimkit.models import MLP

    model = MLP().eval()
    model.net[1] = Int8Linear(encode_weight(model.net[1].weight, 4), model.net[1].bias, relu=True)
    model.net[3] = Int8Linear(encode_weight(model.net[3].weight, 8), model.net[3].bias, mode="static",
                              act_scale=torch.tensor(0.05), smooth=torch.rand(256) + 0.5,
                              outlier_index=torch.tensor([3, 7]), outlier_weight=torch.randn(128, 2))
    loaded = load(save(model, tmp_path))
    x = torch.rand(16, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))


def test_layers_reading_one_input_quantize_it_once_and_an_in_place_change_is_seen(monkeypatch):
    q, k = (Int8Linear(encode_weight(nn.Linear(16, 8).weight, 8)) for _ in range(2))
    calls = []
    tokens = kernels._tokens
    monkeypatch.setattr(kernels, "_tokens", lambda *a: calls.append(1) or tokens(*a))
    x = torch.randn(2, 5, 16)
    q(x), k(x)
    assert len(calls) == 1
    x.mul_(2)  # same memory, new values: quantized again
    assert torch.equal(k(x), k(x.clone()))
    assert len(calls) >= 2
