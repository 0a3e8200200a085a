"""Naive GPTQ/OBQ: one column at a time with the explicit inverse Hessian, updated by removing
the quantized column (the OBS formula), no Cholesky factor and no lazy blocks."""

import torch

from slimkit.formats import fake_quantize, qparams


def naive_gptq(weight, hessian, fmt, group_size, symmetric=True, damp=0.01):
    W = weight.double().clone()
    H = hessian.double().clone()
    H += damp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    cols = W.shape[1]
    for j in range(cols):
        if j % group_size == 0:
            scale, zero = qparams(W[:, j:j + group_size].float(), fmt, symmetric=symmetric, dim=1)
        q = fake_quantize(W[:, j:j + 1].float(), fmt, scale, zero).double()[:, 0]
        Q[:, j] = q
        err = (W[:, j] - q) / Hinv[j, j]
        W[:, j:] -= err[:, None] * Hinv[j, j:][None, :]
        Hinv = Hinv - Hinv[:, j:j + 1] @ Hinv[j:j + 1, :] / Hinv[j, j]
    return Q.float()
