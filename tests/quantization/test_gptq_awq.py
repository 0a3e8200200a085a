import pytest
import torch

from slimkit.formats import PerGroup, fake_quantize, qparams
from slimkit.quantization.awq import awq_input_scale
from slimkit.quantization.gptq import gptq
from tests.reference.gptq import brute_force_clip_error, naive_gptq


def correlated_inputs(n=512, features=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g) / features ** 0.5
    scale = torch.linspace(0.2, 3.0, features)  # some channels carry much larger activations
    return (torch.randn(n, features, generator=g) @ mix + 0.1 * torch.randn(n, features, generator=g)) * scale


def rtn(W, fmt, group):
    out = torch.empty_like(W)
    for s in range(0, W.shape[1], group):
        scale, zero = qparams(W[:, s:s + group], fmt, dim=1)
        out[:, s:s + group] = fake_quantize(W[:, s:s + group], fmt, scale, zero)
    return out


def output_error(W, Q, X):
    return ((X @ (W - Q).T) ** 2).mean().item()


def test_gptq_matches_the_naive_column_by_column_reference():
    X, W = correlated_inputs(), torch.randn(24, 64)
    H = X.T.double() @ X.double()
    fast, _, _ = gptq(W, H, "int4", granularity=PerGroup(16), block_size=32)
    naive = naive_gptq(W, H, "int4", group_size=16)
    # same rounding decisions; the values differ only by float32 vs float64 scale arithmetic
    torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-5)


def test_gptq_lazy_blocks_do_not_change_the_result():
    X, W = correlated_inputs(seed=1), torch.randn(16, 64)
    H = X.T.double() @ X.double()
    a, _, _ = gptq(W, H, "int3", granularity=PerGroup(16), block_size=16)
    b, _, _ = gptq(W, H, "int3", granularity=PerGroup(16), block_size=64)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gptq_beats_rtn_on_the_layer_output_and_scales_reproduce_codes():
    X, W = correlated_inputs(seed=2), torch.randn(32, 64)
    H = X.T.double() @ X.double()
    for act_order in (False, True):
        Q, scales, zeros = gptq(W, H, "int4", granularity=PerGroup(16), act_order=act_order)
        # measured 0.71x (natural order) and 0.39x (act order) of RTN's error on these inputs
        assert output_error(W, Q, X) < 0.8 * output_error(W, rtn(W, "int4", 16), X)
        assert scales.shape == (32, 4) and zeros is None
        # every value sits exactly on its group's grid
        expanded = scales.repeat_interleave(16, dim=1)
        torch.testing.assert_close(fake_quantize(Q, "int4", expanded, None), Q)


def test_awq_never_worse_than_plain_rounding():
    X, W = correlated_inputs(seed=3), torch.randn(32, 64)
    scale, alpha = awq_input_scale(W, X, "int3", granularity=PerGroup(16), grid=10)
    assert scale.shape == (64,) and (alpha is None or 0 <= alpha < 1)
    from slimkit.formats import quantize

    deq = quantize(W * scale, "int3", granularity="group", axis=0, group_size=16).dequantize() / scale
    assert output_error(W, deq, X) <= output_error(W, rtn(W, "int3", 16), X) + 1e-9


def test_awq_clip_never_raises_a_groups_output_error():
    from slimkit.quantization.awq import awq_clip

    X, W = correlated_inputs(seed=4), torch.randn(32, 64)
    scales, zeros = awq_clip(W, X, "int4", granularity=PerGroup(16), grid=10)
    assert scales.shape == (32, 4) and zeros is None
    clipped = fake_quantize(W, "int4", scales.repeat_interleave(16, dim=1), None)
    for g in range(4):
        cols = slice(16 * g, 16 * g + 16)
        err = ((X[:, cols] @ (clipped[:, cols] - W[:, cols]).T) ** 2).sum(0)
        plain = ((X[:, cols] @ (rtn(W, "int4", 16)[:, cols] - W[:, cols]).T) ** 2).sum(0)
        assert (err <= plain * (1 + 1e-5)).all()  # each row's choice includes the unclipped range


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_clip_finds_the_brute_force_best_range(symmetric):
    from slimkit.quantization.gptq import clip_qparams

    w = torch.randn(12, 64) * torch.linspace(0.1, 2.0, 12)[:, None]
    w[3, 5] = 9.0  # an outlier
    w[7] = w[7].abs() + 0.5  # an all-positive row (asymmetric range starts at 0)
    scale, zero = clip_qparams(w, "int4", symmetric=symmetric)
    err = (fake_quantize(w, "int4", scale, zero) - w).abs().pow(2.4).sum(1)
    best = brute_force_clip_error(w, 4, symmetric)
    torch.testing.assert_close(err.double(), best, rtol=1e-4, atol=1e-6)
    unclipped = (fake_quantize(w, "int4", *qparams(w, "int4", symmetric=symmetric, dim=1)) - w).abs().pow(2.4).sum(1)
    assert (err <= unclipped * (1 + 1e-6)).all()  # the full range is a candidate
    assert (err < 0.95 * unclipped).sum() >= 3  # and clipping pays on several rows here


def test_static_groups_fix_scales_from_the_original_weights():
    from slimkit.quantization.gptq import clip_qparams

    X, W = correlated_inputs(seed=5), torch.randn(16, 64)
    H = X.T.double() @ X.double()
    for mse_clip in (False, True):
        Q, scales, _ = gptq(W, H, "int4", granularity=PerGroup(16), static_groups=True, mse_clip=mse_clip)
        for g in range(4):
            block = W[:, 16 * g:16 * g + 16]
            expected = clip_qparams(block, "int4")[0] if mse_clip else qparams(block, "int4", dim=1)[0]
            torch.testing.assert_close(scales[:, g:g + 1], expected)
        assert output_error(W, Q, X) < 0.8 * output_error(W, rtn(W, "int4", 16), X)


def test_mse_clip_lowers_the_layer_output_error_of_gptq_here():
    X, W = correlated_inputs(seed=6), torch.randn(32, 64)
    W[:, 10] *= 6  # heavy columns: each group's absmax is set by a few weights
    H = X.T.double() @ X.double()
    plain, _, _ = gptq(W, H, "int3", granularity=PerGroup(32))
    clipped, _, _ = gptq(W, H, "int3", granularity=PerGroup(32), mse_clip=True)
    assert output_error(W, clipped, X) < output_error(W, plain, X)


def test_gptq_with_awq_scale_is_gptq_on_the_scaled_weight_and_inputs():
    from torch import nn

    from slimkit.quantization import WeightQuantConfig, quantize

    X, layer = correlated_inputs(n=256, seed=7), nn.Linear(64, 16, bias=False)
    X[:, :4] *= 20  # a few salient channels, which AWQ's scaling protects
    W, model = layer.weight.detach().clone(), nn.Sequential(layer)
    quantize(model, WeightQuantConfig("int4", group_size=16, method="gptq", awq_scale=True, scale_dtype="float32",
                                      act_order=False),  # the naive reference sweeps columns in order
             calib=[X])
    s = model[0].input_scale
    assert s is not None and not torch.equal(s, torch.ones_like(s))  # the search chose a scaling here
    Xs = X / s  # what the layer's codes see: the Hessian is built from these inputs, not rescaled
    expected = naive_gptq(W * s, Xs.T.double() @ Xs.double(), "int4", 16)
    torch.testing.assert_close(model[0].dequantized_weight() * s, expected, rtol=1e-4, atol=1e-5)
