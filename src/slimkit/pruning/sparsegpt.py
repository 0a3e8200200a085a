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

from slimkit.pruning.masks import lowest, prune_count


def sparsegpt(weight: Tensor, hessian: Tensor, sparsity: float, *, nm: tuple[int, int] | None = None,
              damp: float = 0.01, block_size: int = 128) -> tuple[Tensor, Tensor]:
    """(updated weight (out, in) float32 with the pruned entries zero, keep mask).

    ``hessian`` is X^T X (in, in) over the calibration tokens (any positive factor).

    >>> w, keep = sparsegpt(layer.weight, inputs.hessian, 0.5)  # doctest: +SKIP
    """
    W = weight.detach().float().clone()  # (out, in)
    H = hessian.detach().double().clone()
    rows, cols = W.shape
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * H.diagonal().mean())
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    keep = torch.ones_like(W, dtype=torch.bool)
    total = prune_count(W.numel(), sparsity)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        err = torch.zeros_like(W1)
        d = Hinv1.diagonal()
        if nm is None:
            # this block's exact share of the layer's count, so the blocks add up to the target
            count = round(total * i2 / cols) - round(total * i1 / cols)
            keep[:, i1:i2] = lowest(W1.square() / d.square(), count)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                scores = W1[:, i:i + nm[1]].square() / d[i:i + nm[1]].square()
                block = torch.ones_like(scores, dtype=torch.bool)
                block.scatter_(1, scores.topk(nm[1] - nm[0], dim=1, largest=False).indices, False)
                keep[:, i1 + i:i1 + i + nm[1]] = block
            w = W1[:, i]
            q = torch.where(keep[:, i1 + i], w, torch.zeros_like(w))
            e = (w - q) / d[i]
            W1[:, i:] -= e.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            err[:, i] = e
        W[:, i1:i2] = W1
        W[:, i2:] -= err @ Hinv[i1:i2, i2:]
    W.masked_fill_(~keep, 0)
    return W, keep
