"""format_table: limits and SQNR floors on N(0, 1) data."""

import pytest
import torch

from slimkit.formats import FORMAT_NAMES, format_bits, format_table, quantize

# Floors in dB, symmetric, groups of 128; each sits ~1 dB under what the format reaches on
# N(0, 1) data, so a lost bit (about 6 dB) or a broken scale fails.
SQNR_FLOORS = {
    "int8": (42.5, "7 bits of levels over +/-absmax of 128 normals: about 6 dB per bit"),
    "int4": (17.5, "15 levels: about 6 dB per bit below int8"),
    "int3": (10.0, "7 levels"),
    "int2": (1.5, "3 levels {-absmax, 0, absmax}: barely better than zero"),
    "nf4": (19.5, "normal-quantile levels beat int4's uniform ones on normal data"),
    "fp8_e4m3": (30.5, "3 mantissa bits: relative error 2^-4, about 31.5 dB on normals"),
    "fp8_e5m2": (24.5, "2 mantissa bits: about 6 dB below E4M3"),
    "fp4_e2m1": (18.0, "8 magnitudes {0..6}: close to int4"),
    "fp16": (72.5, "10 mantissa bits"),
    "tf32": (72.5, "the same 10 mantissa bits as fp16"),
    "bf16": (54.5, "7 mantissa bits"),
    "binary": (4.2, "sign times mean|x|: 1 - 2/pi of the energy lost, 4.4 dB"),
    "ternary": (7.0, "TWN on normal data, about 7.3 dB"),
}


@pytest.fixture(scope="module")
def table():
    return {row["name"]: row for row in format_table()}


def test_table_lists_every_format_with_its_limits(table):
    assert list(table) == list(FORMAT_NAMES)
    assert all(row["bits"] == format_bits(name) for name, row in table.items())
    assert table["fp8_e4m3"]["max"] == torch.finfo(torch.float8_e4m3fn).max
    assert table["fp8_e5m2"]["max"] == torch.finfo(torch.float8_e5m2).max
    assert table["fp16"]["max"] == torch.finfo(torch.float16).max
    assert table["bf16"]["max"] == torch.finfo(torch.bfloat16).max
    assert table["bf16"]["epsilon"] == torch.finfo(torch.bfloat16).eps
    assert table["fp16"]["smallest_normal"] == torch.finfo(torch.float16).smallest_normal
    assert table["tf32"]["bits"] == 19 and table["tf32"]["epsilon"] == 2**-10
    assert table["fp4_e2m1"]["max"] == 6.0 and table["int4"]["mantissa_bits"] is None
    assert table["int4"]["granularity"] == "group" and table["fp16"]["granularity"] == "tensor"


@pytest.mark.parametrize("fmt", list(SQNR_FLOORS))
def test_sqnr_floors(table, fmt):
    floor, reason = SQNR_FLOORS[fmt]
    assert table[fmt]["sqnr_db"] >= floor, reason


def test_sqnr_grows_with_int_bits(table):
    sqnr = [table[f"int{bits}"]["sqnr_db"] for bits in range(2, 9)]
    assert sqnr == sorted(sqnr)
    assert table["int8"]["sqnr_db"] > table["int4"]["sqnr_db"] > table["int3"]["sqnr_db"] > table["int2"]["sqnr_db"]


def test_nf4_beats_int4_on_normal_data():
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(7))
    mse = {fmt: (quantize(x, fmt, group_size=64).dequantize() - x).pow(2).mean().item() for fmt in ("nf4", "int4")}
    assert mse["nf4"] < mse["int4"]
