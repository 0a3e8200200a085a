"""FP8 / FP4 / fp16 / bf16 / TF32 against torch's casts and naive references."""

import math

import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.formats import MINIFLOATS, decode, encode, round_float
from tests.reference.formats import nearest_even_code, tf32_round

ONE = torch.tensor(1.0)
TORCH_FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def finite_fp16_values() -> torch.Tensor:
    """Every finite fp16 bit pattern, as float32 (63,488 values including +/-0 and subnormals)."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    return values[values.isfinite()]


def representable(fmt: str) -> torch.Tensor:
    """Sorted non-negative finite values of an 8-bit (or smaller) minifloat."""
    values = decode(torch.arange(2 ** MINIFLOATS[fmt].bits, dtype=torch.uint8), fmt, ONE)
    return values[values.isfinite() & (values >= 0)].unique()


def probe_values(fmt: str) -> torch.Tensor:
    """Random normals at many scales, exact ties, subnormals and values beyond max, both signs."""
    spec = MINIFLOATS[fmt]
    generator = torch.Generator().manual_seed(1)
    scales = torch.logspace(-12, 6, 37, base=2.0)
    normals = (torch.randn(37, 2000, generator=generator) * scales[:, None]).flatten()
    grid = representable(fmt)
    ties = (grid[1:] + grid[:-1]) / 2
    top = spec.max_value
    overflow_tie = top + 2.0 ** (math.floor(math.log2(top)) - spec.man_bits) / 2  # 464 for E4M3
    beyond = torch.tensor([top * 1.01, top * 1.5, top * 2, overflow_tie, 1e30, 3e38])
    subnormal = torch.rand(5000, generator=generator) * spec.smallest_normal
    tiny = torch.tensor([1e-40, 1e-45, 0.0])
    values = torch.cat([normals, grid, ties, beyond, subnormal, tiny])
    return torch.cat([values, -values])


@pytest.mark.parametrize("fmt", list(TORCH_FP8))
def test_fp8_encode_is_bit_exact_with_torch(fmt):
    values = torch.cat([finite_fp16_values(), probe_values(fmt)])
    expected = values.to(TORCH_FP8[fmt]).view(torch.uint8)
    codes = encode(values, fmt, ONE)
    assert codes.dtype == torch.uint8
    mismatch = (codes != expected).nonzero().flatten()
    assert mismatch.numel() == 0, f"first mismatches at {values[mismatch[:5]].tolist()}"


@pytest.mark.parametrize("fmt", list(TORCH_FP8))
def test_fp8_decode_all_codes_matches_torch(fmt):
    codes = torch.arange(256, dtype=torch.uint8)
    expected = codes.view(TORCH_FP8[fmt]).float()
    values = decode(codes, fmt, ONE)
    assert torch.equal(values.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert torch.equal(values[finite], expected[finite])
    assert torch.equal(values.signbit()[finite], expected.signbit()[finite])


def test_fp8_limits_match_the_published_formats():
    assert MINIFLOATS["fp8_e4m3"].max_value == 448.0 == torch.finfo(torch.float8_e4m3fn).max
    assert MINIFLOATS["fp8_e5m2"].max_value == 57344.0 == torch.finfo(torch.float8_e5m2).max
    assert MINIFLOATS["fp8_e4m3"].smallest_normal == torch.finfo(torch.float8_e4m3fn).smallest_normal
    assert MINIFLOATS["fp8_e5m2"].smallest_normal == torch.finfo(torch.float8_e5m2).smallest_normal


def test_fp8_overflow_saturates_e4m3_and_rounds_to_inf_e5m2():
    big = torch.tensor([463.9, 464.0, 1e9, float("inf"), -1e9])
    assert decode(encode(big, "fp8_e4m3", ONE), "fp8_e4m3", ONE).tolist() == [448, 448, 448, 448, -448]
    over = torch.tensor([61439.0, 61440.0, 1e9, float("-inf")])
    inf = float("inf")
    assert decode(encode(over, "fp8_e5m2", ONE), "fp8_e5m2", ONE).tolist() == [57344, inf, inf, -inf]


def test_fp8_nan_encodes_to_nan():
    nan = torch.tensor([float("nan")])
    for fmt in TORCH_FP8:
        assert decode(encode(nan, fmt, ONE), fmt, ONE).isnan().all()


def test_fp4_values_round_trip():
    magnitudes = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    values = torch.tensor(magnitudes + [-m for m in magnitudes])
    codes = encode(values, "fp4_e2m1", ONE)
    assert codes.tolist() == list(range(16))
    assert torch.equal(decode(codes, "fp4_e2m1", ONE), values)
    assert MINIFLOATS["fp4_e2m1"].max_value == 6.0


def test_fp4_midpoints_go_to_the_even_code_and_overflow_saturates():
    magnitudes = decode(torch.arange(8, dtype=torch.uint8), "fp4_e2m1", ONE).tolist()
    midpoints = [(a + b) / 2 for a, b in zip(magnitudes, magnitudes[1:])]
    probes = midpoints + [0.1, 0.3, 0.74, 1.3, 2.4, 5.1, 6.5, 7.0, 100.0]
    expected = [nearest_even_code(v, magnitudes) for v in probes]
    assert encode(torch.tensor(probes), "fp4_e2m1", ONE).tolist() == expected
    assert encode(torch.tensor(midpoints), "fp4_e2m1", ONE).tolist() == [0, 2, 2, 4, 4, 6, 6]
    assert encode(torch.tensor([-7.0]), "fp4_e2m1", ONE).item() == 0b1111


def midpoints_of_all(dtype: torch.dtype) -> torch.Tensor:
    """Every value of a 16-bit float dtype and every midpoint between neighbours (exact ties)."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).float()
    grid = values[values.isfinite()].unique()
    return torch.cat([grid, (grid[1:] + grid[:-1]) / 2])


@pytest.mark.parametrize("fmt, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_fp16_and_bf16_round_like_torch(fmt, dtype):
    extremes = torch.tensor([65519.0, 65520.0, 3.4e38, torch.finfo(torch.float32).max, 1e-40])
    values = torch.cat([midpoints_of_all(dtype), probe_values("fp8_e5m2"), torch.randn(10000) * 1e4, extremes])
    assert torch.equal(round_float(values, fmt), values.to(dtype).float())


def test_fp16_codes_are_the_bit_pattern():
    values = finite_fp16_values()
    codes = encode(values, "fp16", ONE)
    assert codes.dtype == torch.int32
    assert torch.equal(codes, values.half().view(torch.int16).int() & 0xFFFF)
    assert torch.equal(decode(codes, "fp16", ONE), values)


def test_tf32_rounds_like_the_bit_reference():
    generator = torch.Generator().manual_seed(2)
    patterns = torch.randint(-(2**31), 2**31 - 1, (20000,), generator=generator, dtype=torch.int64)
    random_bits = patterns.to(torch.int32).view(torch.float32)
    ulp = 2.0**-10
    ties = [1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2), 2**-130 * (1 + ulp / 2)]  # the last one subnormal
    edges = [3.4e38, torch.finfo(torch.float32).max, 1e-40, -1e-45]
    values = torch.cat([random_bits[random_bits.isfinite()], torch.randn(2000), torch.tensor(ties + edges)])
    expected = torch.tensor([tf32_round(v) for v in values.tolist()])
    assert torch.equal(round_float(values, "tf32"), expected)
    assert (encode(values, "tf32", ONE) < 2**19).all()


def test_round_float_rejects_non_float_formats():
    with pytest.raises(UserInputError, match="round_float needs a float format"):
        round_float(torch.ones(2), "int8")
