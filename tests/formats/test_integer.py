"""intN codes against torch.quantize_per_channel, and the scale / zero-point formulas."""

import pytest
import torch

from slimkit.formats import decode, encode, qparams

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def sample(shape=(6, 3000)) -> torch.Tensor:
    """Rows at different scales and offsets, including an all-positive and an all-zero row."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=generator) * torch.logspace(-3, 2, shape[0])[:, None]
    x[1] = x[1].abs() + 0.5
    x[-1] = 0
    return x


def test_int8_asymmetric_per_channel_matches_torch_quint8():
    x = sample()
    scale, zero_point = qparams(x, "int8", symmetric=False, dim=1)
    codes = encode(x, "int8", scale, zero_point)
    reference = torch.quantize_per_channel(x, scale.flatten(), zero_point.flatten().long(), 0, torch.quint8)
    assert torch.equal(codes, reference.int_repr())
    assert torch.equal(decode(codes, "int8", scale, zero_point), reference.dequantize())


def test_int8_asymmetric_matches_torch_on_another_axis():
    x = sample((7, 200)).reshape(7, 40, 5).transpose(0, 1)  # (40, 7, 5), channels along axis 1
    scale, zero_point = qparams(x, "int8", symmetric=False, dim=(0, 2))
    reference = torch.quantize_per_channel(x, scale.flatten(), zero_point.flatten().long(), 1, torch.quint8)
    assert torch.equal(encode(x, "int8", scale, zero_point), reference.int_repr())


def test_int8_symmetric_matches_torch_qint8_in_the_restricted_range():
    x = sample()
    scale, zero_point = qparams(x, "int8", dim=1)
    assert zero_point is None
    codes = encode(x, "int8", scale)
    reference = torch.quantize_per_channel(x, scale.flatten(), torch.zeros(6, dtype=torch.long), 0, torch.qint8)
    expected = reference.int_repr().int().clamp(-127, 127)
    assert torch.equal(codes.int() - 128, expected)  # offset binary: code = q + 128
    assert codes.min() >= 1


@pytest.mark.parametrize("bits", range(2, 9))
def test_int_scale_formulas(bits):
    x = sample()
    fmt = f"int{bits}"
    scale, _ = qparams(x[:-1], fmt, dim=1)
    qmax = 2 ** (bits - 1) - 1
    assert torch.equal(scale, x[:-1].abs().amax(1, keepdim=True) / qmax)
    scale, zero_point = qparams(x[:-1], fmt, symmetric=False, dim=1)
    low, high = x[:-1].amin(1, keepdim=True).clamp(max=0), x[:-1].amax(1, keepdim=True).clamp(min=0)
    assert torch.equal(scale, (high - low) / (2**bits - 1))
    assert torch.equal(zero_point, torch.round(-low / scale).clamp(0, 2**bits - 1))
    codes = encode(x[:-1], fmt, scale, zero_point)
    assert codes.max() <= 2**bits - 1
    error = (decode(codes, fmt, scale, zero_point) - x[:-1]).abs()
    assert (error <= scale / 2 * (1 + 1e-5)).all()  # affine range covers every value: only rounding


def test_all_zero_and_empty_inputs_get_usable_scales():
    for fmt in ("int4", "nf4", "fp8_e4m3", "binary", "ternary"):
        scale, _ = qparams(torch.zeros(3, 4), fmt, dim=1)
        assert (scale > 0).all()
        decoded = decode(encode(torch.zeros(3, 4), fmt, scale), fmt, scale)
        assert decoded.abs().max() <= scale.max()  # zero exactly, or +scale (binary has no zero)
        empty_scale, _ = qparams(torch.zeros(3, 0), fmt, dim=1)
        assert empty_scale.shape == (3, 1) and (empty_scale > 0).all()
    scale, zero_point = qparams(torch.zeros(0), "int8", symmetric=False)
    assert scale.shape == (1,) and scale.item() > 0 and zero_point.item() == 0
