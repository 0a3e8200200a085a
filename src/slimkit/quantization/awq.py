"""AWQ (Lin et al., 2024): scale salient input channels up before quantizing.

Input channel j is multiplied by s_j = mean|x_j|^alpha (normalised so max*min = 1) and the
input divided by it: W x = (W diag(s)) (diag(s)^-1 x). Channels that see large activations get
finer effective resolution. alpha is searched on a grid to minimise the layer's output error on
calibration inputs. slimkit keeps s in the QuantLinear (``input_scale``) instead of folding it
into the previous layer, which works for any model graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import quantize as quantize_tensor


def awq_input_scale(weight: Tensor, inputs: Tensor, fmt: str, *, group_size: int | None, symmetric: bool = True,
                    grid: int = 20) -> tuple[Tensor, float]:
    """Best per-input-channel scale (in,) and the alpha that gave it.

    ``inputs`` (n, in) are calibration rows of the layer's input.
    """
    W = weight.detach().float()  # (out, in)
    x = inputs.float()  # (n, in)
    reference = x @ W.T  # (n, out)
    x_mean = x.abs().mean(0).clamp_min(1e-8)  # (in,)
    best_error, best_scale, best_alpha = float("inf"), torch.ones_like(x_mean), 0.0
    for k in range(grid):
        alpha = k / grid
        s = x_mean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        Wq = _round_trip(W * s, fmt, group_size, symmetric) / s
        error = (x @ Wq.T - reference).pow(2).mean().item()
        if error < best_error:
            best_error, best_scale, best_alpha = error, s, alpha
    return best_scale, best_alpha


def _round_trip(W: Tensor, fmt: str, group_size: int | None, symmetric: bool) -> Tensor:
    granularity = "group" if group_size else "channel"
    return quantize_tensor(W, fmt, granularity=granularity, axis=0, group_size=group_size or W.shape[1],
                           symmetric=symmetric).dequantize()
