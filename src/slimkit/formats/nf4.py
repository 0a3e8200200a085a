"""NormalFloat4 (QLoRA): 16 values at normal quantiles, scaled by the block's absmax."""

import torch
from torch import Tensor

from slimkit.formats.reduce import amax, safe_scale


def normal_map(offset: float = 0.9677083) -> Tensor:
    """The NF4 code book, built as bitsandbytes' `create_normal_map` does.

    8 positive and 7 negative normal quantiles between `offset` and 1/2, plus an exact 0,
    normalised by the largest so that the book spans [-1, 1].

    Example:
        >>> normal_map()[[0, 7, 15]]
        tensor([-1.,  0.,  1.])
    """
    # float32 linspace, float64 quantiles, float32 book: the steps behind the published table.
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).float().sort().values
    return values / values.max()


NF4_CODE = normal_map()  # (16,)
_BOUNDARIES = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2  # (15,) midpoints between neighbouring codes


def nf4_qparams(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """absmax over `dims`, keepdim: the code book spans [-1, 1]."""
    return safe_scale(amax(x.abs(), dims))


def nf4_encode(x: Tensor, scale: Tensor) -> Tensor:
    """uint8 index (0..15) of the code nearest to x / scale (a tie goes to the lower code).

    Example:
        >>> nf4_encode(torch.tensor([-2.0, 0.01, 2.0]), torch.tensor(2.0))
        tensor([ 0,  7, 15], dtype=torch.uint8)
    """
    normalised = x.float() * (1.0 / scale)
    return torch.bucketize(normalised, _BOUNDARIES.to(normalised.device)).to(torch.uint8)


def nf4_decode(codes: Tensor, scale: Tensor) -> Tensor:
    """float32 values code_book[codes] * scale."""
    return NF4_CODE.to(codes.device)[codes.long()] * scale
