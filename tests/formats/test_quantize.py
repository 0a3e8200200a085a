"""quantize / dequantize: layouts, group tails, every format, and the bad-input messages."""

import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.formats import FORMAT_NAMES, dequantize, fake_quantize, qparams, quantize
from tests.reference.formats import twn_scale


def weight(shape=(12, 100), seed=5) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_short_last_group_takes_its_scale_from_its_own_elements():
    x = weight()  # rows of 100, groups of 64 and 36
    enc = quantize(x, "int4", group_size=64)
    assert enc.scale.shape == (12, 2)
    assert torch.equal(enc.scale[:, 0], x[:, :64].abs().amax(1) / 7)
    assert torch.equal(enc.scale[:, 1], x[:, 64:].abs().amax(1) / 7)
    out = dequantize(enc)
    assert out.shape == x.shape
    assert torch.equal(out[:, :64], fake_quantize(x[:, :64], "int4", enc.scale[:, :1]))
    assert torch.equal(out[:, 64:], fake_quantize(x[:, 64:], "int4", enc.scale[:, 1:]))


def test_group_layout_follows_the_kept_axis():
    x = weight((6, 4, 10))
    enc = quantize(x, "int8", axis=1, group_size=16)  # rows: 4 along axis 1, each 60 long
    rows = x.movedim(1, 0).reshape(4, 60)
    assert enc.scale.shape == (4, 4)
    assert torch.equal(enc.scale[:, 3], rows[:, 48:].abs().amax(1) / 127)
    element_scale = enc.scale.repeat_interleave(16, dim=1)[:, :60]  # (4, 60), one scale per element
    assert torch.equal(dequantize(enc), fake_quantize(x, "int8", element_scale.reshape(4, 6, 10).movedim(0, 1)))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_per_channel_on_any_axis(axis):
    x = weight((5, 6, 7))
    enc = quantize(x, "int8", granularity="channel", axis=axis)
    dims = tuple(d for d in range(3) if d != axis % 3)
    scale, _ = qparams(x, "int8", dim=dims)
    assert torch.equal(enc.scale.flatten(), scale.flatten())
    assert torch.equal(dequantize(enc), fake_quantize(x, "int8", scale))
    assert enc.axis == axis % 3 and enc.group_size is None


def test_per_tensor_and_asymmetric():
    x = weight() + 1
    enc = quantize(x, "int4", granularity="tensor", symmetric=False)
    scale, zero_point = qparams(x, "int4", symmetric=False)
    assert enc.scale.shape == (1, 1) and enc.axis is None
    assert enc.zero_point.dtype == torch.uint8 and enc.zero_point.item() == zero_point.item()
    assert torch.equal(dequantize(enc), fake_quantize(x, "int4", scale, zero_point))


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_every_format_round_trips_within_its_grid(fmt):
    x = weight()
    out = dequantize(quantize(x, fmt, group_size=32))
    assert out.shape == x.shape and out.dtype == torch.float32
    # Even the 1-2 bit formats keep most of the energy of normal data (binary loses 1 - 2/pi = 0.36,
    # int2 with levels {-absmax, 0, absmax} about 0.42); a broken layout loses about 1 or more.
    assert ((out - x).pow(2).mean() / x.pow(2).mean()) < 0.5


def test_binary_is_sign_times_mean_abs_per_group():
    x = weight()
    out = dequantize(quantize(x, "binary", granularity="channel"))
    expected = torch.where(x >= 0, 1.0, -1.0) * x.abs().mean(1, keepdim=True)
    assert torch.allclose(out, expected, rtol=1e-6, atol=0)


def test_ternary_uses_the_twn_scale():
    x = weight((3, 200))
    enc = quantize(x, "ternary", granularity="channel")
    for row in range(3):
        assert enc.scale[row, 0].item() == pytest.approx(twn_scale(x[row]), rel=1e-5)
    assert set(dequantize(enc)[0].unique().tolist()) <= {-enc.scale[0, 0].item(), 0.0, enc.scale[0, 0].item()}


def test_unscaled_formats_store_no_scale():
    x = weight()
    enc = quantize(x, "bf16", granularity="channel")
    assert enc.scale is None and enc.granularity == "tensor"
    assert torch.equal(dequantize(enc), x.bfloat16().float())
    assert enc.bits_per_element() == 16


def test_empty_tensors_quantize():
    for shape in [(0, 8), (4, 0), (0,)]:
        x = torch.zeros(shape)
        assert dequantize(quantize(x, "nf4", group_size=4)).shape == shape
        assert dequantize(quantize(x, "int8", granularity="tensor")).shape == shape


@pytest.mark.parametrize("symmetric", [True, False])
def test_given_scales_encode_values_already_on_their_grid_exactly(symmetric):
    x = weight()  # rows of 100: groups of 32, 32, 32 and 4
    scale, zero_point = qparams(x[:, :32], "int4", symmetric=symmetric, dim=1)  # (12, 1) from one group only
    scale, zero_point = scale.repeat(1, 4), None if symmetric else zero_point.repeat(1, 4)
    on_grid = fake_quantize(x, "int4", scale[:, :1], None if symmetric else zero_point[:, :1])
    enc = quantize(on_grid, "int4", group_size=32, symmetric=symmetric, scale=scale, zero_point=zero_point)
    assert torch.equal(enc.scale, scale)
    assert torch.equal(dequantize(enc), on_grid)
    with pytest.raises(UserInputError, match=r"scale has shape \(12, 2\), the layout needs \(12, 4\)"):
        quantize(on_grid, "int4", group_size=32, scale=scale[:, :2])


def test_errors_name_the_problem():
    x = weight()
    with pytest.raises(UserInputError, match="unknown format 'int9'; valid formats: int2, int3, int4"):
        quantize(x, "int9")
    with pytest.raises(UserInputError, match="group_size must be a positive integer, got 0"):
        quantize(x, "int4", group_size=0)
    with pytest.raises(UserInputError, match="tensor contains NaN/Inf values"):
        quantize(torch.tensor([1.0, float("nan")]), "int4")
    with pytest.raises(UserInputError, match="tensor contains NaN/Inf values"):
        quantize(torch.tensor([1.0, float("inf")]), "nf4")
    with pytest.raises(UserInputError, match="'fp16' has no scales to double-quantize"):
        quantize(x, "fp16", double_quant=True)
    with pytest.raises(UserInputError, match="unknown granularity 'row'"):
        quantize(x, "int4", granularity="row")
    with pytest.raises(UserInputError, match="axis 2 is out of range"):
        quantize(x, "int4", axis=2)
    with pytest.raises(UserInputError, match="only defined for int formats"):
        quantize(x, "nf4", symmetric=False)
    with pytest.raises(UserInputError, match="floating-point"):
        quantize(torch.ones(4, dtype=torch.int64), "int4")


def test_float16_scales_are_stored_rounded_and_cost_16_bits_per_group():
    x = torch.randn(64, 512)
    enc = quantize(x, "int4", group_size=128, scale_dtype=torch.float16)
    assert enc.scale.dtype == torch.float16 and abs(enc.bits_per_element() - (4 + 16 / 128)) < 1e-9
    full = quantize(x, "int4", group_size=128)
    # same codes up to a rare rounding flip; the float16 scale is the float32 one rounded
    torch.testing.assert_close(enc.scale.float(), full.scale, rtol=1e-3, atol=0)
    assert (enc.dequantize() - x).pow(2).mean() < 1.01 * (full.dequantize() - x).pow(2).mean()
    with pytest.raises(UserInputError, match="exceeds float16's range"):
        quantize(x * 1e6, "int4", group_size=128, scale_dtype=torch.float16)
