"""format_table: the limits of every format and its measured SQNR on normal data."""

import math

import torch

from slimkit.formats.minifloat import MINIFLOATS
from slimkit.formats.quantize import quantize
from slimkit.formats.registry import FORMAT_NAMES, INT_BITS, format_bits

SQNR_GROUP_SIZE = 128

# Largest magnitude, in units of the scale, of the formats that are not minifloats.
_GRID_MAX = {**{fmt: 2 ** (bits - 1) - 1 for fmt, bits in INT_BITS.items()}, "nf4": 1.0, "binary": 1.0, "ternary": 1.0}


def sqnr_db(x: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum x^2 / sum (x - approx)^2), in dB.

    Example:
        >>> sqnr_db(torch.full((4,), 10.0), torch.full((4,), 11.0))
        20.0
    """
    noise = (x.double() - approx.double()).pow(2).sum().item()
    signal = x.double().pow(2).sum().item()
    return math.inf if noise == 0 else round(10 * math.log10(signal / noise), 6)


def format_table() -> list[dict]:
    """One row per format: name, bits, exponent_bits, mantissa_bits, max, smallest_normal, epsilon,
    granularity and sqnr_db.

    exponent/mantissa bits, smallest_normal and epsilon (distance from 1 to the next value) are None
    for non-float formats, whose `max` is the largest level in units of the scale. SQNR is measured on
    a (1000, 1000) N(0, 1) tensor (torch.Generator().manual_seed(0)), symmetric, groups of 128 along
    the last dim for scaled formats; fp16/bf16/tf32 are unscaled ("tensor").

    Example:
        >>> [row["name"] for row in format_table()][:3]
        ['int2', 'int3', 'int4']
    """
    x = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(0))
    return [_row(fmt, x) for fmt in FORMAT_NAMES]


def _row(fmt: str, x: torch.Tensor) -> dict:
    enc = quantize(x, fmt, granularity="group", axis=0, group_size=SQNR_GROUP_SIZE)
    spec = MINIFLOATS.get(fmt)
    return {
        "name": fmt,
        "bits": format_bits(fmt),
        "exponent_bits": spec and spec.exp_bits,
        "mantissa_bits": spec and spec.man_bits,
        "max": spec.max_value if spec else _GRID_MAX[fmt],
        "smallest_normal": spec and spec.smallest_normal,
        "epsilon": spec and spec.epsilon,
        "granularity": enc.granularity,
        "sqnr_db": sqnr_db(x, enc.dequantize()),
    }
