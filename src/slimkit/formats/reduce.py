"""Keep-dim reductions that also work on empty tensors, and the floor that keeps scales usable."""

import math

import torch
from torch import Tensor

from slimkit.errors import UserInputError

# Smallest normal float32: a scale never drops below it, so encoding never divides by zero.
TINY = torch.finfo(torch.float32).tiny


def reduce_dims(x: Tensor, dim: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """Normalise `dim` (None or () = every dim) to a tuple of non-negative dims of `x`.

    Example:
        >>> reduce_dims(torch.zeros(2, 3), -1)
        (1,)
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim or ())
    ndim = max(x.dim(), 1)  # a 0-d tensor accepts dim 0 / -1, as torch does
    for d in dims:
        if not -ndim <= d < ndim:
            raise UserInputError(f"dim {d} is out of range for a tensor of shape {tuple(x.shape)}")
    if not dims or x.dim() == 0:
        return tuple(range(x.dim()))
    return tuple(sorted({d % ndim for d in dims}))


def kept_shape(x: Tensor, dims: tuple[int, ...]) -> list[int]:
    """Shape of a keep-dim reduction of `x` over `dims`."""
    return [1 if d in dims else size for d, size in enumerate(x.shape)]


def amax(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Maximum over `dims` with keepdim; 0 where there is nothing to reduce."""
    if x.numel() == 0:
        return x.new_zeros(kept_shape(x, dims))
    return torch.amax(x, dim=dims, keepdim=True)


def amin(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Minimum over `dims` with keepdim; 0 where there is nothing to reduce."""
    if x.numel() == 0:
        return x.new_zeros(kept_shape(x, dims))
    return torch.amin(x, dim=dims, keepdim=True)


def mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean over `dims` with keepdim; 0 where there is nothing to reduce."""
    count = math.prod(x.shape[d] for d in dims)
    return x.sum(dim=dims, keepdim=True) / max(count, 1)


def safe_scale(scale: Tensor) -> Tensor:
    """`scale` as float32, floored at TINY (all-zero or empty groups get a usable scale)."""
    return scale.float().clamp(min=TINY)
