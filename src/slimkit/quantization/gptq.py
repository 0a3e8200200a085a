"""GPTQ (Frantar et al., 2023): quantize a weight column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse calibration Hessian.

Follows the reference implementation: damped Hessian, Cholesky factor of its inverse, lazy
batched updates in blocks, optional activation order. Blocks are whole groups, so each group's
scale is computed from fully updated weights, exactly as a column-by-column pass would. With
``act_order`` the group scales are fixed up front from the original weights ("static groups")
so that the groups stay contiguous in storage.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import fake_quantize, qparams


def gptq(weight: Tensor, hessian: Tensor, fmt: str, *, group_size: int | None, symmetric: bool = True,
         damp: float = 0.01, block_size: int = 128, act_order: bool = False
         ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Quantized weight (out, in) float32 plus its scales and zero points (out, n_groups).

    ``hessian`` is X^T X (in, in) summed over the calibration tokens (any positive factor).
    """
    W = weight.detach().float().clone()  # (out, in)
    H = hessian.detach().double().clone()  # (in, in); float64 keeps the Cholesky factorisation stable
    cols = W.shape[1]
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    g = group_size or cols
    starts = list(range(0, cols, g))
    static = act_order or group_size is None
    params = [qparams(W[:, s:s + g], fmt, symmetric=symmetric, dim=1) for s in starts] if static else [None] * len(starts)
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(damp * H.diagonal().mean())
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    step = block_size if static else max(g, block_size // g * g)
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, step):
        i2 = min(i1 + step, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if not static and col % g == 0:  # a new group starts here, inside this block
                params[col // g] = qparams(W1[:, i:i + g], fmt, symmetric=symmetric, dim=1)
            scale, zero = params[int(perm[col]) // g]  # (out, 1) each
            w = W1[:, i:i + 1]  # (out, 1)
            q = fake_quantize(w, fmt, scale, zero)
            Q[:, col] = q[:, 0]
            err = (w - q) / Hinv1[i, i]  # (out, 1)
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i] = err[:, 0]
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Q = Q[:, torch.argsort(perm)]
    scales = torch.cat([p[0] for p in params], dim=1)
    zeros = None if params[0][1] is None else torch.cat([p[1] for p in params], dim=1)
    return Q, scales, zeros
