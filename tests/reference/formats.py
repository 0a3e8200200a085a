"""Naive number-format references, written from the definitions one element at a time."""

import math
import struct

import torch


def tf32_round(value: float) -> float:
    """Round a float32 to TF32 (drop 13 mantissa bits, nearest, ties to even) on its bit pattern."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    if (bits >> 23) & 0xFF == 0xFF:  # inf and NaN stay as they are
        return value
    kept, dropped = bits >> 13, bits & 0x1FFF
    if dropped > 0x1000 or (dropped == 0x1000 and kept & 1):
        kept += 1  # a carry may run into the exponent, up to inf: that is IEEE rounding
    return struct.unpack("<f", struct.pack("<I", (kept << 13) & 0xFFFFFFFF))[0]


def nearest_even_code(value: float, values: list[float]) -> int:
    """Index of the entry of `values` (indexed by code, NaN entries ignored) nearest to `value`;
    on a tie the even code wins. Beyond the largest value the largest wins (saturation)."""
    best, best_distance = None, math.inf
    for code, candidate in enumerate(values):
        if math.isnan(candidate) or math.isinf(candidate):
            continue
        distance = abs(value - candidate)
        if distance < best_distance or (distance == best_distance and code % 2 == 0):
            best, best_distance = code, distance
    return best


def pack_bits(codes: list[int], bits: int) -> list[int]:
    """Little-endian bit stream: bit j of code i is stream bit i*bits + j."""
    stream = [(code >> j) & 1 for code in codes for j in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(stream[k + j] << j for j in range(8)) for k in range(0, len(stream), 8)]


def twn_scale(x: torch.Tensor) -> float:
    """Ternary Weight Networks' scale of a whole tensor: mean |x| over |x| > 0.7 mean |x|."""
    values = [abs(v) for v in x.flatten().tolist()]
    delta = 0.7 * sum(values) / len(values)
    above = [v for v in values if v > delta]
    return sum(above) / len(above)
