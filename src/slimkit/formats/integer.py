"""Uniform integer formats int2 ... int8, symmetric or asymmetric (affine).

Symmetric: restricted range q in [-(2^(N-1)-1), 2^(N-1)-1], scale = absmax / (2^(N-1)-1), no zero point.
Its codes are stored in offset binary: code = q + 2^(N-1), in [1, 2^N - 1] (the GPTQ convention).
Asymmetric: unsigned codes in [0, 2^N - 1], code = clamp(round(x / scale) + zero_point).

Like torch's quantizers, `x / scale` is computed as `x * (1 / scale)` in float32, so codes match
`torch.quantize_per_channel` exactly. Inputs must be finite (`quantize` checks).
"""

import torch
from torch import Tensor

from slimkit.formats.reduce import amax, amin, safe_scale


def int_qmax(bits: int, symmetric: bool) -> int:
    """Largest q: 2^(N-1)-1 symmetric, 2^N-1 asymmetric.

    Example:
        >>> int_qmax(4, True), int_qmax(4, False)
        (7, 15)
    """
    return 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1


def int_qparams(x: Tensor, bits: int, symmetric: bool, dims: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
    """Scale and zero point (None when symmetric) over `dims`, keepdim.

    Example:
        >>> int_qparams(torch.tensor([-1.0, 3.0]), 8, False, (0,))
        (tensor([0.0157]), tensor([64.]))
    """
    qmax = int_qmax(bits, symmetric)
    if symmetric:
        return safe_scale(amax(x.abs(), dims) / qmax), None
    low, high = amin(x, dims).clamp(max=0), amax(x, dims).clamp(min=0)
    scale = safe_scale((high - low) / qmax)
    zero_point = torch.round(-low / scale).clamp(0, qmax)
    return scale, zero_point


def int_encode(x: Tensor, bits: int, scale: Tensor, zero_point: Tensor | None) -> Tensor:
    """uint8 codes: offset binary when `zero_point` is None, affine otherwise.

    Example:
        >>> int_encode(torch.tensor([-1.0, 0.0, 1.0]), 4, torch.tensor(1 / 7), None)
        tensor([ 1,  8, 15], dtype=torch.uint8)
    """
    q = torch.round(x.float() * (1.0 / scale))
    if zero_point is None:
        qmax = int_qmax(bits, True)
        return (q.clamp(-qmax, qmax) + 2 ** (bits - 1)).to(torch.uint8)
    return (q + zero_point).clamp(0, int_qmax(bits, False)).to(torch.uint8)


def int_decode(codes: Tensor, bits: int, scale: Tensor, zero_point: Tensor | None) -> Tensor:
    """float32 values (code - offset) * scale.

    Example:
        >>> int_decode(torch.tensor([1, 8, 15], dtype=torch.uint8), 4, torch.tensor(0.5), None)
        tensor([-3.5000,  0.0000,  3.5000])
    """
    offset = 2 ** (bits - 1) if zero_point is None else zero_point.float()
    return (codes.float() - offset) * scale
