"""SparseGPT (Frantar & Alistarh, 2023): prune a Linear weight column block by column block, choosing
the mask by w^2 / [H^-1]_jj^2 and pushing each pruned weight's error onto the columns not yet
visited through the inverse calibration Hessian (the same machinery as GPTQ).

Follows the reference implementation (damped Hessian, upper Cholesky factor of its inverse, masks
chosen per block of 128 columns, or per M columns for N:M) except that each block prunes an exact
share of the layer's count, so the layer reaches the target sparsity exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.calibration.obs import inverse_hessian_factor, obs_sweep, without_dead_inputs
from slimkit.pruning.masks import lowest, prune_count


def sparsegpt(weight: Tensor, hessian: Tensor, sparsity: float, *, nm: tuple[int, int] | None = None,
              damp: float = 0.01, block_size: int = 128) -> tuple[Tensor, Tensor]:
    """(updated weight (out, in) float32 with the pruned entries zero, keep mask).

    ``hessian`` is X^T X (in, in) over the calibration tokens (any positive factor).

    >>> w, keep = sparsegpt(layer.weight, inputs.hessian, 0.5)  # doctest: +SKIP
    """
    W, H = without_dead_inputs(weight, hessian)
    cols = W.shape[1]
    keep = torch.ones_like(W, dtype=torch.bool)
    total = prune_count(W.numel(), sparsity)

    def block_mask(block: Tensor, factor: Tensor, i1: int, i2: int) -> None:
        if nm is None:
            # this block's exact share of the layer's count, so the blocks add up to the target
            count = round(total * i2 / cols) - round(total * i1 / cols)
            keep[:, i1:i2] = lowest(block.square() / factor.diagonal().square(), count)

    def masked(block: Tensor, i: int, col: int) -> Tensor:
        if nm is not None and i % nm[1] == 0:
            ahead = block[:, i:i + nm[1]]
            scores = ahead.square() / factor_diagonal[col:col + ahead.shape[1]].square()
            group = torch.ones_like(scores, dtype=torch.bool)
            group.scatter_(1, scores.topk(nm[1] - nm[0], dim=1, largest=False).indices, False)
            keep[:, col:col + nm[1]] = group
        w = block[:, i:i + 1]
        return torch.where(keep[:, col:col + 1], w, torch.zeros_like(w))

    Hinv = inverse_hessian_factor(H, damp)
    factor_diagonal = Hinv.diagonal()
    return obs_sweep(W, Hinv, block_size, masked, block_mask), keep
