"""Outlier handling for W8A8: SmoothQuant and LLM.int8()-style mixed decomposition.

A few input channels of transformer Linears carry activations 10-100x larger than the rest;
one int8 scale per token or tensor then leaves the other channels with a handful of levels.

- SmoothQuant (Xiao et al., 2023): x W^T = (x / s)(W s)^T with s_j = max|x_j|^alpha / max|W_j|^(1-alpha),
  migrating range from the activation into the weight. slimkit keeps 1/s in the Int8Linear
  (the quantize step multiplies by it, fused into the same loop) instead of folding it into the
  previous LayerNorm, which would also scale BERT's residual branch.
  The migration is kept for a layer only if it lowers that layer's simulated W8A8 output error on
  calibration rows (measured: alpha 0.5 helps MiniLM's attention inputs but hurts its FFN output
  layers, which then stay unsmoothed), so smoothing never does worse than plain rounding there.
- LLM.int8() (Dettmers et al., 2022): input columns whose |x| exceeds a threshold are computed in
  float, the rest in int8. slimkit fixes the outlier columns from calibration (max |x_j| above the
  threshold) rather than detecting them per batch, so the fast path keeps a fixed shape.

>>> s = smooth_factors(torch.rand(64) * 10, torch.randn(32, 64), alpha=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

from torch import Tensor

from slimkit.formats import fake_quantize, qparams


def smooth_factors(channel_absmax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """SmoothQuant's s (in,): divide the input by it, multiply the weight's columns by it."""
    w_absmax = weight.detach().float().abs().amax(0).clamp_min(1e-5)  # (in,)
    x_absmax = channel_absmax.float().clamp_min(1e-5)
    return (x_absmax.pow(alpha) / w_absmax.pow(1 - alpha)).clamp_min(1e-5)


def outlier_columns(channel_absmax: Tensor, threshold: float) -> Tensor | None:
    """Indices (int64) of the input columns whose calibrated |x| max exceeds ``threshold``; None if none."""
    index = (channel_absmax > threshold).nonzero().flatten()
    return index if index.numel() else None


def smoothing_helps(sample: Tensor, weight: Tensor, s: Tensor, weight_bits: int, per_token: bool) -> bool:
    """Whether x/s times W*s has a smaller simulated int8 output error than x times W on ``sample`` (rows, in)."""
    reference = sample @ weight.T  # (rows, out)
    errors = [(_simulated(x, w, weight_bits, per_token) - reference).pow(2).mean().item()
              for x, w in ((sample, weight), (sample / s, weight * s))]
    return errors[1] < errors[0]


def _simulated(x: Tensor, weight: Tensor, weight_bits: int, per_token: bool) -> Tensor:
    w = fake_quantize(weight, f"int{weight_bits}", qparams(weight, f"int{weight_bits}", dim=1)[0])
    x = fake_quantize(x, "int8", qparams(x, "int8", dim=1 if per_token else None)[0])
    return x @ w.T
