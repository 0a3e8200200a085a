"""GPTQ (Frantar et al., 2023): quantize a weight column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse calibration Hessian.

Follows the reference implementation: damped Hessian, Cholesky factor of its inverse, lazy
batched updates in blocks, optional activation order. Blocks are whole groups, so each group's
scale is computed from fully updated weights, exactly as a column-by-column pass would. With
``act_order`` (or ``static_groups``) the group scales are fixed up front from the original
weights ("static groups"), so that the groups stay contiguous in storage.

``mse_clip`` chooses each group's range as the reference Quantizer's ``mse=True`` does: the
min/max range shrunk by the ratio in {1, 0.99, ..., 0.21} that minimises sum |q(w) - w|^2.4
over the group's weights, per output row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.calibration.obs import inverse_hessian_factor, obs_sweep, without_dead_inputs
from slimkit.formats import Granularity, PerChannel, fake_quantize, qparams

CLIP_GRID, CLIP_MAX_SHRINK, CLIP_NORM = 100, 0.8, 2.4  # the reference GPTQ Quantizer's defaults


def gptq(weight: Tensor, hessian: Tensor, fmt: str, *, granularity: Granularity, symmetric: bool = True,
         damp: float = 0.01, block_size: int = 128, act_order: bool = False, static_groups: bool = False,
         mse_clip: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Quantized weight (out, in) float32 plus its scales and zero points (out, n_groups).

    ``hessian`` is X^T X (in, in) summed over the calibration tokens (any positive factor);
    ``granularity`` is PerGroup(n) or PerChannel().

    >>> q, scales, zeros = gptq(torch.randn(8, 32), torch.eye(32), "int4", granularity=PerGroup(16))
    """
    W, H = without_dead_inputs(weight, hessian)
    cols = W.shape[1]
    g = granularity.group_len(cols)
    starts = list(range(0, cols, g))
    static = act_order or static_groups or isinstance(granularity, PerChannel)

    def group_params(w: Tensor) -> tuple[Tensor, Tensor | None]:
        return clip_qparams(w, fmt, symmetric=symmetric) if mse_clip else qparams(w, fmt, symmetric=symmetric, dim=1)

    params = [group_params(W[:, s:s + g]) for s in starts] if static else [None] * len(starts)
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]

    def rounded(block: Tensor, i: int, col: int) -> Tensor:
        if not static and col % g == 0:  # a new group starts here, inside this block
            params[col // g] = group_params(block[:, i:i + g])
        scale, zero = params[int(perm[col]) // g]  # (out, 1) each
        return fake_quantize(block[:, i:i + 1], fmt, scale, zero)

    # blocks are whole groups, so each group's scale comes from fully updated weights
    step = block_size if static else max(g, block_size // g * g)
    Q = obs_sweep(W, inverse_hessian_factor(H, damp), step, rounded)[:, torch.argsort(perm)]
    scales = torch.cat([p[0] for p in params], dim=1)
    zeros = None if params[0][1] is None else torch.cat([p[1] for p in params], dim=1)
    return Q, scales, zeros


def clip_qparams(w: Tensor, fmt: str, *, symmetric: bool = True, grid: int = CLIP_GRID,
                 max_shrink: float = CLIP_MAX_SHRINK, norm: float = CLIP_NORM) -> tuple[Tensor, Tensor | None]:
    """Scale and zero point per row of ``w`` (rows, cols), each (rows, 1), from the row's range
    shrunk by the ratio 1 - k/grid (k < max_shrink * grid) with the least sum |q(w) - w|^norm.

    >>> scale, zero = clip_qparams(torch.randn(4, 128), "int4")
    """
    w = w.detach().float()
    # every weight format's parameters depend on the range only, so the shrunk range stands in for
    # the clamped weights
    bounds = torch.cat([w.min(1, keepdim=True).values, w.max(1, keepdim=True).values], 1)  # (rows, 2)
    best_err = best_scale = best_zero = None
    for k in range(max(1, int(max_shrink * grid))):  # k = 0: the full range
        scale, zero = qparams(bounds * (1 - k / grid), fmt, symmetric=symmetric, dim=1)
        err = (fake_quantize(w, fmt, scale, zero) - w).abs_().pow_(norm).sum(1, keepdim=True)  # (rows, 1)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if zero is not None:
            best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero
