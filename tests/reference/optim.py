"""Naive optimizer references, one element at a time in Python floats (float64).

The dynamic code book is built from the bit patterns that dynamic tree quantization defines
(Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning"; Dettmers et al. 2022),
not from bitsandbytes' loop over exponents.
"""

import math


def dynamic_tree_value(byte: int, signed: bool) -> float | None:
    """Value of one 8-bit dynamic tree pattern, or None for the one pattern that means nothing.

    Layout: [sign bit if signed] then E zero bits (exponent: scale 10^-E), one indicator bit 1,
    and F fraction bits that pick bin k of 2^F equal bins of [0.1, 1] (its midpoint). Patterns
    with E >= 7 have no room left: 0 (and, signed, -0, which means nothing).
    """
    bits = [(byte >> (7 - i)) & 1 for i in range(8)]
    sign = -1.0 if signed and bits[0] else 1.0
    rest = bits[1:] if signed else bits
    if 1 not in rest:
        return 0.0 if sign > 0 else None
    exponent = rest.index(1)
    if exponent >= 7:  # unsigned 00000001: exponent 10^-7 is beyond the 7 exponents used
        return None
    fraction_bits = rest[exponent + 1:]
    k = sum(bit << (len(fraction_bits) - 1 - i) for i, bit in enumerate(fraction_bits))
    width = 0.9 / 2 ** len(fraction_bits)
    return sign * 10.0**-exponent * (0.1 + (k + 0.5) * width)


def dynamic_tree_map(signed: bool) -> list[float]:
    """All 256 patterns' values, sorted; the pattern that means nothing stands for 1.0, the
    choice bitsandbytes makes so that the block's absmax itself is represented exactly."""
    values = [dynamic_tree_value(byte, signed) for byte in range(256)]
    return sorted(1.0 if v is None else v for v in values)


def nearest_code(value: float, code: list[float]) -> int:
    """Index of the code nearest to ``value``; on a tie the lower index."""
    distances = [abs(value - c) for c in code]
    return distances.index(min(distances))


def blockwise_quantize(values: list[float], code: list[float], block_size: int) -> tuple[list[int], list[float]]:
    """Codes and per-block absmax of a flat list; the last block may be short."""
    codes, absmaxes = [], []
    for start in range(0, len(values), block_size):
        block = values[start:start + block_size]
        absmax = max(abs(v) for v in block)
        absmaxes.append(absmax)
        codes += [nearest_code(v / absmax if absmax else 0.0, code) for v in block]
    return codes, absmaxes


def blockwise_dequantize(codes: list[int], absmaxes: list[float], code: list[float], block_size: int) -> list[float]:
    return [code[c] * absmaxes[i // block_size] for i, c in enumerate(codes)]


def adamw_step(param: list[float], grad: list[float], m: list[float], v: list[float], step: int,
               lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """AdamW (Loshchilov & Hutter 2019, algorithm 2 with Adam's bias correction), in place."""
    for i, g in enumerate(grad):
        param[i] -= lr * weight_decay * param[i]
        m[i] = beta1 * m[i] + (1 - beta1) * g
        v[i] = beta2 * v[i] + (1 - beta2) * g * g
        m_hat = m[i] / (1 - beta1**step)
        v_hat = v[i] / (1 - beta2**step)
        param[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
