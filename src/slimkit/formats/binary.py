"""Binary (sign times mean |x|) and ternary (TWN: Li & Liu, "Ternary Weight Networks", 2016) formats.

Binary codes: 1 for x >= 0, 0 for x < 0, so zero maps to +scale (one bit has no room for 0).
Ternary codes: q + 1 for q in {-1, 0, 1}. The scale is TWN's: threshold delta = 0.7 mean|x|, scale =
mean of the |x| above delta. Encoding then takes the level nearest to x / scale (threshold scale / 2),
the smallest error for that scale.
"""

import torch
from torch import Tensor

from slimkit.formats.reduce import mean, safe_scale


def binary_qparams(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """mean |x| over `dims`, keepdim (the L2-optimal scale for sign codes)."""
    return safe_scale(mean(x.abs(), dims))


def binary_encode(x: Tensor) -> Tensor:
    """uint8 codes: 1 where x >= 0.

    Example:
        >>> binary_encode(torch.tensor([-0.3, 0.0, 2.0]))
        tensor([0, 1, 1], dtype=torch.uint8)
    """
    return (x >= 0).to(torch.uint8)


def binary_decode(codes: Tensor, scale: Tensor) -> Tensor:
    """float32 values +/-scale."""
    return (codes.float() * 2 - 1) * scale


def ternary_qparams(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """TWN scale over `dims`, keepdim.

    Example:
        >>> ternary_qparams(torch.tensor([0.1, -1.0, 2.0, 0.0]), (0,))
        tensor([1.5000])
    """
    magnitude = x.abs()
    above = (magnitude > 0.7 * mean(magnitude, dims)).float()
    count = above.sum(dim=dims, keepdim=True).clamp(min=1)
    return safe_scale((magnitude * above).sum(dim=dims, keepdim=True) / count)


def ternary_encode(x: Tensor, scale: Tensor) -> Tensor:
    """uint8 codes 0, 1, 2 for -scale, 0, +scale (nearest level)."""
    return (torch.round(x.float() * (1.0 / scale)).clamp(-1, 1) + 1).to(torch.uint8)


def ternary_decode(codes: Tensor, scale: Tensor) -> Tensor:
    """float32 values (code - 1) * scale."""
    return (codes.float() - 1) * scale
