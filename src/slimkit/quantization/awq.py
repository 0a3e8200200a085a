"""AWQ (Lin et al., 2024): activation-aware scaling of input channels, then weight clipping.

1. Scale search: input channel j is multiplied by s_j = mean|x_j|^alpha / mean|w_j|^(1-alpha)
   (|w| relative to its group's absmax; AutoAWQ's "duo scaling"; normalised so that max*min = 1)
   and the input divided by it: W x = (W diag(s)) (diag(s)^-1 x). Channels that see large
   activations get finer effective resolution. alpha is searched on a grid to minimise
   the layer's output error on calibration inputs; no scaling is a candidate too, so the search
   never does worse than plain rounding on those inputs.
2. Clip search: each group's range is shrunk by a ratio in [max_shrink, 1] chosen per output
   row and group to minimise that group's contribution to the output error, as AWQ's auto-clip does.

slimkit keeps s in the QuantLinear (``input_scale``) instead of folding it into the previous
layer, which works for any model graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import Granularity, fake_quantize, qparams


def awq_input_scale(weight: Tensor, inputs: Tensor, fmt: str, *, granularity: Granularity, symmetric: bool = True,
                    grid: int = 20) -> tuple[Tensor, float | None]:
    """Best per-input-channel scale (in,) and the alpha that gave it (None: no scaling won).

    ``inputs`` (n, in) are calibration rows of the layer's input.
    """
    W = weight.detach().float()  # (out, in)
    x = inputs.float()  # (n, in)
    reference = x @ W.T  # (n, out)
    x_mean = x.abs().mean(0).clamp_min(1e-8)  # (in,)
    w_mean = _relative_weight_magnitude(W, granularity).clamp_min(1e-8)  # (in,)
    # no scaling at all is the first candidate, so the search never does worse than plain rounding
    plain = (x @ _round_trip(W, fmt, granularity, symmetric).T - reference).pow(2).mean().item()
    best_error, best_scale, best_alpha = plain, torch.ones_like(x_mean), None
    for k in range(grid):
        alpha = k / grid
        s = (x_mean.pow(alpha) / w_mean.pow(1 - alpha)).clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        Wq = _round_trip(W * s, fmt, granularity, symmetric) / s
        error = (x @ Wq.T - reference).pow(2).mean().item()
        if error < best_error:
            best_error, best_scale, best_alpha = error, s, alpha
    return best_scale, best_alpha


def _relative_weight_magnitude(W: Tensor, granularity: Granularity) -> Tensor:
    """Mean over output rows of |w| relative to its group's absmax, per input channel (in,)."""
    g = granularity.group_len(W.shape[1])
    relative = torch.empty_like(W)
    for start in range(0, W.shape[1], g):
        block = W[:, start:start + g].abs()
        relative[:, start:start + g] = block / block.amax(1, keepdim=True).clamp_min(1e-8)
    return relative.mean(0)


def awq_clip(weight: Tensor, inputs: Tensor, fmt: str, *, granularity: Granularity, symmetric: bool = True,
             grid: int = 20, max_shrink: float = 0.5) -> tuple[Tensor, Tensor | None]:
    """Scales and zero points (out, n_groups) of the clipped ranges that minimise each group's output error."""
    W, x = weight.detach().float(), inputs.float()  # (out, in), (n, in)
    g = granularity.group_len(W.shape[1])
    scales, zeros = [], []
    for start in range(0, W.shape[1], g):
        Wg, xg = W[:, start:start + g], x[:, start:start + g]  # (out, g), (n, g)
        lo, hi = Wg.min(1, keepdim=True).values, Wg.max(1, keepdim=True).values  # (out, 1)
        best_err = torch.full((W.shape[0],), float("inf"))
        best_scale, best_zero = qparams(Wg, fmt, symmetric=symmetric, dim=1)
        for k in range(int(grid * (1 - max_shrink)) + 1):
            ratio = 1 - k / grid
            scale, zero = qparams(Wg.clamp(lo * ratio, hi * ratio), fmt, symmetric=symmetric, dim=1)
            err = (xg @ (fake_quantize(Wg, fmt, scale, zero) - Wg).T).pow(2).sum(0)  # (out,)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better[:, None], scale, best_scale)
            if zero is not None:
                best_zero = torch.where(better[:, None], zero, best_zero)
        scales.append(best_scale)
        zeros.append(best_zero)
    return torch.cat(scales, 1), None if zeros[0] is None else torch.cat(zeros, 1)


def _round_trip(W: Tensor, fmt: str, granularity: Granularity, symmetric: bool) -> Tensor:
    """W rounded onto its own group grids (no packing: this runs once per alpha)."""
    g = granularity.group_len(W.shape[1])
    out = torch.empty_like(W)
    for start in range(0, W.shape[1], g):
        block = W[:, start:start + g]
        out[:, start:start + g] = fake_quantize(block, fmt, *qparams(block, fmt, symmetric=symmetric, dim=1))
    return out
