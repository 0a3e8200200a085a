"""qparams / encode / decode for every format: one entry point, dispatched by format name.

Codes are unpacked: uint8 for every format of at most 8 bits, int32 bit patterns for fp16, bf16 and
tf32 (tf32 codes are the top 19 bits of the float32 pattern). Per format:

| format         | scale                           | zero point        | code                          |
| -------------- | ------------------------------- | ----------------- | ----------------------------- |
| intN sym       | absmax / (2^(N-1)-1)            | None              | q + 2^(N-1) (offset binary)   |
| intN asym      | (max(x,0) - min(x,0)) / (2^N-1) | round(-min/scale) | q + zero_point, in [0, 2^N-1] |
| nf4            | absmax                          | None              | index of the nearest code     |
| fp8 / fp4      | absmax / format max             | None              | minifloat bit pattern         |
| fp16/bf16/tf32 | 1 (unscaled)                    | None              | bit pattern (int32)           |
| binary         | mean abs x                      | None              | 1 if x >= 0 else 0            |
| ternary        | TWN (see binary.py)             | None              | q + 1, q in {-1, 0, 1}        |

A scale never drops below the smallest normal float32, so all-zero and empty inputs encode to zero.
"""

import torch
from torch import Tensor

from slimkit.errors import UserInputError
from slimkit.formats.binary import (
    binary_decode,
    binary_encode,
    binary_qparams,
    ternary_decode,
    ternary_encode,
    ternary_qparams,
)
from slimkit.formats.integer import int_decode, int_encode, int_qparams
from slimkit.formats.minifloat import MINIFLOATS, decode_minifloat, encode_minifloat
from slimkit.formats.nf4 import nf4_decode, nf4_encode, nf4_qparams
from slimkit.formats.reduce import amax, kept_shape, reduce_dims, safe_scale
from slimkit.formats.registry import INT_BITS, UNSCALED, check_format


def qparams(
    x: Tensor, fmt: str, *, symmetric: bool = True, dim: int | tuple[int, ...] | None = None
) -> tuple[Tensor, Tensor | None]:
    """Scale (float32) and zero point (float32, asymmetric int only) reducing `x` over `dim`.

    Both keep the reduced dims (size 1) so they broadcast against `x`. `dim=None` reduces every dim.
    Unscaled formats (fp16, bf16, tf32) get a scale of ones.

    Example:
        >>> import torch
        >>> scale, zero_point = qparams(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), "int8", dim=1)
        >>> scale.shape, zero_point
        (torch.Size([2, 1]), None)
    """
    check_format(fmt)
    _check_symmetric(fmt, symmetric)
    x = x.detach().float()
    dims = reduce_dims(x, dim)
    if fmt in INT_BITS:
        return int_qparams(x, INT_BITS[fmt], symmetric, dims)
    if fmt == "nf4":
        return nf4_qparams(x, dims), None
    if fmt in UNSCALED:
        return x.new_ones(kept_shape(x, dims)), None
    if fmt in MINIFLOATS:
        return safe_scale(amax(x.abs(), dims) / MINIFLOATS[fmt].max_value), None
    if fmt == "binary":
        return binary_qparams(x, dims), None
    return ternary_qparams(x, dims), None


def encode(x: Tensor, fmt: str, scale: Tensor, zero_point: Tensor | None = None) -> Tensor:
    """Unpacked codes of `x` in `fmt` given `scale` (and `zero_point` for asymmetric int).

    Example:
        >>> import torch
        >>> encode(torch.tensor([-1.0, 0.0, 1.0]), "int4", torch.tensor(1 / 7))
        tensor([ 1,  8, 15], dtype=torch.uint8)
    """
    check_format(fmt)
    _check_zero_point(fmt, zero_point)
    if fmt in INT_BITS:
        return int_encode(x, INT_BITS[fmt], scale, zero_point)
    if fmt == "nf4":
        return nf4_encode(x, scale)
    if fmt in MINIFLOATS:
        return encode_minifloat(x.float() * (1.0 / scale), MINIFLOATS[fmt])
    if fmt == "binary":
        return binary_encode(x)
    return ternary_encode(x, scale)


_TORCH_FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def decode(codes: Tensor, fmt: str, scale: Tensor, zero_point: Tensor | None = None) -> Tensor:
    """float32 values of `codes` (the inverse of `encode` up to rounding).

    Example:
        >>> import torch
        >>> decode(torch.tensor([1, 8, 15], dtype=torch.uint8), "int4", torch.tensor(0.5))
        tensor([-3.5000,  0.0000,  3.5000])
    """
    check_format(fmt)
    _check_zero_point(fmt, zero_point)
    if fmt in INT_BITS:
        return int_decode(codes, INT_BITS[fmt], scale, zero_point)
    if fmt == "nf4":
        return nf4_decode(codes, scale)
    if fmt in _TORCH_FP8 and codes.dtype == torch.uint8:  # torch's cast is bit-exact and much faster
        return codes.view(_TORCH_FP8[fmt]).float() * scale
    if fmt in MINIFLOATS:
        return decode_minifloat(codes, MINIFLOATS[fmt]) * scale
    if fmt == "binary":
        return binary_decode(codes, scale)
    return ternary_decode(codes, scale)


def fake_quantize(x: Tensor, fmt: str, scale: Tensor, zero_point: Tensor | None = None) -> Tensor:
    """decode(encode(x)): `x` rounded onto the grid of `fmt`, as float32.

    Example:
        >>> import torch
        >>> fake_quantize(torch.tensor([0.3, 0.9]), "int2", torch.tensor(1.0))
        tensor([0., 1.])
    """
    return decode(encode(x, fmt, scale, zero_point), fmt, scale, zero_point)


def round_float(x: Tensor, fmt: str) -> Tensor:
    """Round `x` to the nearest value of a float format (ties to even), returned as float32.

    `fmt` is "fp16", "bf16", "tf32" (8 exponent, 10 mantissa bits) or another minifloat, unscaled.
    Overflow follows the format: inf for fp16/bf16/tf32/fp8_e5m2, saturation for fp8_e4m3/fp4_e2m1.

    Example:
        >>> import torch
        >>> round_float(torch.tensor([1 + 2**-11, 1 + 3 * 2**-11]), "tf32")
        tensor([1.0000, 1.0020])
    """
    check_format(fmt)
    if fmt not in MINIFLOATS:
        raise UserInputError(f"round_float needs a float format ({', '.join(MINIFLOATS)}), got '{fmt}'")
    spec = MINIFLOATS[fmt]
    return decode_minifloat(encode_minifloat(x, spec), spec)


def _check_symmetric(fmt: str, symmetric: bool) -> None:
    if not symmetric and fmt not in INT_BITS:
        raise UserInputError(
            f"asymmetric quantization is only defined for int formats, not '{fmt}'; use symmetric=True"
        )


def _check_zero_point(fmt: str, zero_point: Tensor | None) -> None:
    if zero_point is not None and fmt not in INT_BITS:
        raise UserInputError(f"format '{fmt}' has no zero point; pass zero_point=None")
