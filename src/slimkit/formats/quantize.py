"""quantize / dequantize: a whole tensor to an EncodedTensor and back (layouts: see layout.py)."""

import torch
from torch import Tensor

from slimkit.errors import UserInputError
from slimkit.formats.codec import encode
from slimkit.formats.doublequant import quantize_scales
from slimkit.formats.encoded import EncodedTensor
from slimkit.formats.layout import (Grid, Granularity, block_qparams, check_layout, from_blocks, make_grid, to_blocks,
                                    to_rows)
from slimkit.formats.packing import store_codes
from slimkit.formats.reduce import safe_scale
from slimkit.formats.registry import check_format, format_bits, is_scaled


def quantize(
    x: Tensor,
    fmt: str,
    *,
    granularity: str | Granularity = "group",
    axis: int = 0,
    group_size: int = 128,
    symmetric: bool = True,
    double_quant: bool = False,
    scale: Tensor | None = None,
    zero_point: Tensor | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> EncodedTensor:
    """Quantize `x` to `fmt` with one scale per tensor, channel (index along `axis`) or group.

    `granularity` is "tensor", "channel" or "group" (with `group_size`), or a value PerTensor(),
    PerChannel(), PerGroup(n) that carries its group size (then `group_size` is not used).

    fp16/bf16/tf32 are stored unscaled: the layout arguments are ignored and recorded as "tensor".
    `scale` (and `zero_point` when asymmetric), shaped (rows, groups) like `EncodedTensor.scale`,
    replace the computed ones: for weights already on a chosen grid, such as GPTQ's output.
    `scale_dtype=torch.float16` stores the scales in half precision (rounded before encoding, so
    the codes match the stored scales): int4 g128 then costs 4 + 16/128 bits per weight.

    Example:
        >>> enc = quantize(torch.randn(16, 100), "int4", group_size=64)
        >>> enc.scale.shape, enc.codes.numel()
        (torch.Size([16, 2]), 800)
    """
    _check_input(x, fmt, double_quant)
    if zero_point is not None and scale is None:
        raise UserInputError("zero_point was given without scale; pass both, or neither to compute them")
    if not isinstance(granularity, str):
        granularity, group_size = granularity.kind, granularity.group_size
    x = x.detach().float()
    shape = tuple(x.shape)
    if not is_scaled(fmt):
        if scale is not None:
            raise UserInputError(f"format '{fmt}' is stored unscaled; pass scale=None")
        codes = encode(x, fmt, torch.ones((), device=x.device))
        stored = store_codes(codes, format_bits(fmt))
        return EncodedTensor(fmt, shape, "tensor", None, None, True, stored, None, None)
    axis = check_layout(x, granularity, axis, group_size)
    grid = make_grid(shape, granularity, axis, group_size)
    rows = to_rows(x, grid, axis)  # (rows, row_len)
    if scale is None:
        scale, zero_point = block_qparams(rows, fmt, grid, symmetric)  # (rows, groups)
    else:
        scale, zero_point = _given_qparams(grid, symmetric, scale, zero_point)
    scale = _stored_scale(scale, scale_dtype, double_quant)
    zero_blocks = None if zero_point is None else zero_point[..., None]
    codes = encode(to_blocks(rows, grid), fmt, scale.float()[..., None], zero_blocks)  # (rows, groups, group_size)
    enc = EncodedTensor(
        fmt=fmt,
        shape=shape,
        granularity=granularity,
        axis=axis,
        group_size=group_size if granularity == "group" else None,
        symmetric=symmetric,
        codes=store_codes(from_blocks(codes, grid), format_bits(fmt)),
        scale=scale,
        zero_point=None if zero_point is None else zero_point.to(torch.uint8),
    )
    if double_quant:
        enc.scale_codes, enc.scale_scale, enc.scale_offset = quantize_scales(scale)
        enc.scale = None
    return enc


def dequantize(enc: EncodedTensor) -> Tensor:
    """The float32 tensor that `enc` encodes.

    Example:
        >>> x = torch.randn(4, 64)
        >>> (dequantize(quantize(x, "int8")) - x).abs().max() < 0.05
        tensor(True)
    """
    return enc.dequantize()


def _stored_scale(scale: Tensor, scale_dtype: torch.dtype, double_quant: bool) -> Tensor:
    """The scales as they will be stored: float32, or rounded to float16 (inside its normal range)."""
    if scale_dtype == torch.float32 or double_quant:  # double quantization re-encodes fp32 scales itself
        return scale
    if scale_dtype != torch.float16:
        raise UserInputError(f"scale_dtype must be torch.float32 or torch.float16, got {scale_dtype}")
    if scale.max() > 65504:
        raise UserInputError(f"a scale of {scale.max().item():.3g} exceeds float16's range; use scale_dtype=torch.float32")
    return scale.clamp_min(2.0**-14).half()


def _given_qparams(
    grid: Grid, symmetric: bool, scale: Tensor, zero_point: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Caller-chosen scale and zero point, checked against the layout, as float32 (rows, groups)."""
    expected = (grid.rows, grid.groups)
    if tuple(scale.shape) != expected:
        raise UserInputError(f"scale has shape {tuple(scale.shape)}, the layout needs {expected} (rows, groups)")
    if (zero_point is None) != symmetric:
        raise UserInputError("pass zero_point exactly when symmetric=False (asymmetric int formats)")
    if zero_point is not None and tuple(zero_point.shape) != expected:
        raise UserInputError(f"zero_point has shape {tuple(zero_point.shape)}, the layout needs {expected}")
    return safe_scale(scale.detach()), None if zero_point is None else zero_point.detach().float()


def _check_input(x: Tensor, fmt: str, double_quant: bool) -> None:
    check_format(fmt)
    if not x.is_floating_point():
        raise UserInputError(f"quantize expects a floating-point tensor, got {x.dtype}; convert with x.float()")
    if not torch.isfinite(x).all():
        raise UserInputError(
            "tensor contains NaN/Inf values; fix or mask them (e.g. torch.nan_to_num) before quantizing"
        )
    if double_quant and not is_scaled(fmt):
        raise UserInputError(f"format '{fmt}' has no scales to double-quantize; use double_quant=False")
