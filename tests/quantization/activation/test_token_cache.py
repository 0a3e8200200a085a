"""quantize_tokens' one-entry cache (Q/K/V share an input): never hands one tensor's codes to another,
and works under torch.inference_mode (inference tensors have no version counter)."""

import torch
from torch import nn

from slimkit.quantization.activation import kernels
from slimkit.quantization.activation.modules import Int8Linear, encode_weight


def _fresh(x):
    return kernels._tokens(x, None)


def test_views_of_one_input_share_the_codes_and_a_changed_input_does_not():
    x = torch.randn(6, 16)
    first = kernels.quantize_tokens(x)
    assert kernels.quantize_tokens(x.view(6, 16)) is first  # the same memory and version: Q, K, V
    x.mul_(2)  # in place: the version counter moves
    assert torch.equal(kernels.quantize_tokens(x)[1], _fresh(x)[1])


def test_a_reinterpreted_view_of_the_same_memory_gets_its_own_codes():
    x = torch.randn(4, 8)
    kernels.quantize_tokens(x)
    as_int = x.view(torch.int32).float()  # a new tensor; the int32 view itself shares the address
    codes, scale = kernels.quantize_tokens(as_int)
    assert torch.equal(codes, _fresh(as_int)[0]) and torch.equal(scale, _fresh(as_int)[1])


def test_inference_tensors_are_quantized_each_time_in_place_changes_included():
    with torch.inference_mode():
        x = torch.randn(6, 16)
        first = kernels.quantize_tokens(x)
        x.mul_(3)  # no version counter records this
        second = kernels.quantize_tokens(x)
    assert torch.equal(second[0], _fresh(x)[0]) and not torch.equal(second[1], first[1])


def test_w8a8_linear_runs_under_inference_mode():
    layer = nn.Linear(32, 8)
    module = Int8Linear(encode_weight(layer.weight, 8), layer.bias)
    x = torch.randn(3, 32)
    expected = module(x)
    with torch.inference_mode():
        got = module(x)
    assert torch.equal(got, expected)
