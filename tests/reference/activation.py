"""Naive references for activation quantization, written from the papers' definitions with loops."""

import math

import torch


def int8_linear_per_token(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-token symmetric int8 x, per-channel symmetric int8 W, integer dot products in Python ints."""
    w_scale = [max(abs(v) for v in row) / 127 for row in weight.tolist()]
    w_q = [[round(v / s) for v in row] for row, s in zip(weight.tolist(), w_scale)]
    out = []
    for row in x.tolist():
        s = max(max(abs(v) for v in row), 1e-12) / 127
        q = [max(-127, min(127, round(v / s))) for v in row]
        out.append([sum(a * b for a, b in zip(q, wr)) * s * ws + (0.0 if bias is None else float(bias[j]))
                    for j, (wr, ws) in enumerate(zip(w_q, w_scale))])
    return torch.tensor(out)


def rounding_error(values: torch.Tensor, threshold: float, qmax: int = 127) -> float:
    """Summed squared error of rounding ``values`` onto the symmetric grid clipped at ``threshold``."""
    step = threshold / qmax
    return ((values - (values / step).round().clamp(-qmax, qmax) * step) ** 2).sum().item()


def mse_threshold(values: torch.Tensor, candidates: list[float], qmax: int) -> float:
    """The candidate clipping threshold with the least squared error of symmetric rounding on raw values."""
    best, best_error = None, math.inf
    for t in candidates:
        error = rounding_error(values, t, qmax)
        if error < best_error:
            best, best_error = t, error
    return best


def entropy_threshold_bins(counts: list[float], levels: int, stride: int) -> int:
    """TensorRT entropy calibration on a histogram, one bin at a time."""
    best, best_kl = len(counts), math.inf
    for stop in range(levels, len(counts) + 1, stride):
        p = list(counts[:stop])
        p[-1] += sum(counts[stop:])
        q = [0.0] * stop
        width = stop // levels
        bounds = [i * width for i in range(levels)] + [stop]
        for i in range(levels):
            lo, hi = bounds[i], bounds[i + 1]
            present = [j for j in range(lo, hi) if p[j] > 0]
            for j in present:
                q[j] = sum(p[lo:hi]) / len(present)
        total_p, total_q = sum(p), sum(q)
        kl = sum(pj / total_p * math.log((pj / total_p) / (qj / total_q)) for pj, qj in zip(p, q) if pj > 0)
        if kl < best_kl:
            best, best_kl = stop, kl
    return best
