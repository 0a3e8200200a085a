"""GPTQ and SparseGPT's column sweeps exactly as landed before the shared OBS sweep (slimkit.calibration.obs),
kept so that tests can check that the shared sweep gives the same codes, scales and masks bit for bit."""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import fake_quantize, qparams
from slimkit.pruning.masks import lowest, prune_count
from slimkit.quantization.gptq import clip_qparams


def gptq_landed(weight: Tensor, hessian: Tensor, fmt: str, *, group_size: int | None, symmetric: bool = True,
                damp: float = 0.01, block_size: int = 128, act_order: bool = False, static_groups: bool = False,
                mse_clip: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Quantized weight (out, in) float32 plus its scales and zero points (out, n_groups).

    ``hessian`` is X^T X (in, in) summed over the calibration tokens (any positive factor).

    >>> q, scales, zeros = gptq(torch.randn(8, 32), torch.eye(32), "int4", group_size=16)
    """
    W = weight.detach().float().clone()  # (out, in)
    H = hessian.detach().double().clone()  # (in, in); float64 keeps the Cholesky factorisation stable
    cols = W.shape[1]
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    g = group_size or cols
    starts = list(range(0, cols, g))
    static = act_order or static_groups or group_size is None

    def group_params(w: Tensor) -> tuple[Tensor, Tensor | None]:
        return clip_qparams(w, fmt, symmetric=symmetric) if mse_clip else qparams(w, fmt, symmetric=symmetric, dim=1)

    params = [group_params(W[:, s:s + g]) for s in starts] if static else [None] * len(starts)
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
                params[col // g] = group_params(W1[:, i:i + g])
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


def sparsegpt_landed(weight: Tensor, hessian: Tensor, sparsity: float, *, nm: tuple[int, int] | None = None,
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
