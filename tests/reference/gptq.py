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


def brute_force_clip_error(w, bits, symmetric, grid=100, max_shrink=0.8, norm=2.4):
    """Per row of ``w``: the least sum |q(w) - w|^norm over the shrink ratios 1 - k/grid, with the
    intN grid written out (restricted symmetric range, or min/max with a rounded zero point)."""
    w = w.double()
    best = []
    for row in w:
        errors = []
        for k in range(int(max_shrink * grid)):
            ratio = 1 - k / grid
            lo, hi = min(row.min().item() * ratio, 0.0), max(row.max().item() * ratio, 0.0)
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                scale = max(-lo, hi) / qmax
                q = torch.clamp(torch.round(row / scale), -qmax, qmax) * scale
            else:
                levels = 2 ** bits - 1
                scale = (hi - lo) / levels
                zero = min(max(round(-lo / scale), 0), levels)
                q = (torch.clamp(torch.round(row / scale) + zero, 0, levels) - zero) * scale
            errors.append((q - row).abs().pow(norm).sum().item())
        best.append(min(errors))
    return torch.tensor(best, dtype=torch.float64)
