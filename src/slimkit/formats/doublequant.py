"""Double quantization (QLoRA): the first-level fp32 scales are themselves quantized.

As bitsandbytes does, the mean of all scales is subtracted first (`scale_offset`, one fp32), then the
centred scales are quantized in blocks of 256 with one fp32 absmax-derived scale per block
(`scale_scale`). The 8-bit code is int8 symmetric (restricted range +/-127, stored offset binary)
rather than bitsandbytes' dynamic 8-bit map: same storage, simpler to check.
"""

import torch.nn.functional as F
from torch import Tensor

from slimkit.formats.codec import decode, encode, qparams
from slimkit.formats.registry import format_bits, is_scaled

SCALE_BLOCK = 256


def quantize_scales(scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """8-bit codes (n,), per-block scales (ceil(n / 256),) and the offset (1,) of float32 `scale`.

    Example:
        >>> import torch
        >>> codes, scale_scale, offset = quantize_scales(torch.rand(300))
        >>> codes.shape, scale_scale.shape, offset.shape
        (torch.Size([300]), torch.Size([2]), torch.Size([1]))
    """
    flat = scale.reshape(-1).float()
    offset = flat.mean(0, keepdim=True) if flat.numel() else flat.new_zeros(1)
    blocks = F.pad(flat - offset, (0, -flat.numel() % SCALE_BLOCK)).reshape(-1, SCALE_BLOCK)  # (B, 256)
    scale_scale, _ = qparams(blocks, "int8", dim=1)  # (B, 1)
    codes = encode(blocks, "int8", scale_scale).reshape(-1)[: flat.numel()]
    return codes, scale_scale.reshape(-1), offset


def dequantize_scales(codes: Tensor, scale_scale: Tensor, offset: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of `quantize_scales` (up to its rounding), reshaped to `shape`."""
    blocks = F.pad(codes, (0, -codes.numel() % SCALE_BLOCK)).reshape(-1, SCALE_BLOCK)  # (B, 256)
    centred = decode(blocks, "int8", scale_scale[:, None]).reshape(-1)[: codes.numel()]
    return (centred + offset).reshape(shape)


def double_quant_bits(fmt: str = "nf4", group_size: int = 64, double_quant: bool = True) -> float:
    """Analytic bits per parameter of symmetric `fmt` with one scale per `group_size` elements.

    Without double quantization each group adds a 32-bit scale; with it, an 8-bit scale code plus a
    32-bit scale per 256 groups (the single offset is ignored).

    Example:
        >>> double_quant_bits(), double_quant_bits(double_quant=False)
        (4.126953125, 4.5)
    """
    bits = format_bits(fmt)
    if not is_scaled(fmt):
        return float(bits)
    if double_quant:
        return bits + 8 / group_size + 32 / (group_size * SCALE_BLOCK)
    return bits + 32 / group_size
