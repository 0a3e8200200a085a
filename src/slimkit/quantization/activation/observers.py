"""Observers: watch a layer's input during calibration and choose its int8 range [low, high].

- minmax: the smallest and largest value seen.
- moving_average: min and max of each batch, averaged with weight ``momentum`` (first batch as is).
- percentile: |x| cut at a percentile of the histogram of |x| (outliers beyond it are clipped).
- mse: the clipping threshold minimising the expected squared rounding + clipping error.
- entropy: the threshold minimising the KL divergence between the |x| histogram and its 128-level
  quantized version (TensorRT's calibration, Migacz 2017).

The last three share one histogram of |x| with 2048 bins whose range grows as larger values
arrive (old counts are moved into the wider bins). Ranges always contain 0, as int8 grids do.

>>> obs = make_observer("percentile", percentile=99.9)
>>> obs.observe(torch.randn(1000)); low, high = obs.range()  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.errors import UserInputError
from slimkit.formats import qparams

BINS = 2048
LEVELS = 128  # the entropy search compares against the 128 magnitudes of a symmetric int8 grid


class MinMaxObserver:
    def __init__(self) -> None:
        self.low, self.high, self.batches = 0.0, 0.0, 0

    def observe(self, x: Tensor) -> None:
        x = _checked(x)
        low, high = torch.aminmax(x.detach().float())
        self.low, self.high = min(self.low, low.item()), max(self.high, high.item())
        self.batches += 1

    def range(self) -> tuple[float, float]:
        _check_observed(self)
        return self.low, self.high


class MovingAverageObserver(MinMaxObserver):
    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum

    def observe(self, x: Tensor) -> None:
        low, high = (v.item() for v in torch.aminmax(_checked(x).detach().float()))
        if self.batches:
            low = self.low + self.momentum * (low - self.low)
            high = self.high + self.momentum * (high - self.high)
        self.low, self.high = min(low, 0.0), max(high, 0.0)
        self.batches += 1


class HistogramObserver(MinMaxObserver):
    """min/max plus a histogram of |x|; ``range`` picks the threshold with ``method``."""

    def __init__(self, method: str, percentile: float = 99.99) -> None:
        super().__init__()
        self.method, self.percentile = method, percentile
        self.counts = torch.zeros(BINS, dtype=torch.float64)
        self.edge = 0.0  # the histogram covers [0, edge]

    def observe(self, x: Tensor) -> None:
        super().observe(x)
        magnitude = x.detach().float().abs().flatten()
        top = magnitude.max().item() if magnitude.numel() else 0.0
        if top > self.edge:
            self._widen(top)
        if self.edge > 0:
            self.counts += torch.histc(magnitude, BINS, 0.0, self.edge).double()

    def _widen(self, edge: float) -> None:
        """Move the old counts into the bins of the wider range [0, edge] (by their bin centres)."""
        if self.edge > 0:
            centres = (torch.arange(BINS, dtype=torch.float64) + 0.5) * (self.edge / BINS)
            index = (centres / edge * BINS).long().clamp(max=BINS - 1)
            self.counts = torch.zeros(BINS, dtype=torch.float64).index_add_(0, index, self.counts)
        self.edge = edge

    def range(self) -> tuple[float, float]:
        _check_observed(self)
        if self.edge == 0:
            return 0.0, 0.0
        bins = {"percentile": self._percentile_bins, "mse": self._mse_bins, "entropy": self._entropy_bins}
        threshold = bins[self.method]() * self.edge / BINS
        return max(self.low, -threshold), min(self.high, threshold)

    def _percentile_bins(self) -> int:
        cumulative = self.counts.cumsum(0) / self.counts.sum()
        return int(torch.searchsorted(cumulative, self.percentile / 100).clamp(max=BINS - 1)) + 1

    def _mse_bins(self) -> int:
        # each bin's values are taken as spread evenly over it (16 points), not piled at its centre:
        # bins are far narrower than a grid step near zero, where centres would misjudge rounding
        points = (torch.arange(BINS * 16, dtype=torch.float64) + 0.5) * (self.edge / (BINS * 16))
        weights = self.counts.repeat_interleave(16) / 16
        qmax = 255 if self.low >= 0 else 127  # a one-sided input gets the full uint8 grid
        best, best_error = BINS, float("inf")
        for stop in range(BINS // 16, BINS + 1, BINS // 64):
            threshold = stop * self.edge / BINS
            step = threshold / qmax
            rounded = (points / step).round().clamp(max=qmax) * step
            error = float((weights * (points - rounded) ** 2).sum())
            if error < best_error:
                best, best_error = stop, error
        return best

    def _entropy_bins(self) -> int:
        return entropy_threshold_bins(self.counts)

    def __repr__(self) -> str:
        return f"HistogramObserver({self.method})"


def entropy_threshold_bins(counts: Tensor, levels: int = LEVELS) -> int:
    """Number of histogram bins to keep that minimises KL(P || Q) (TensorRT's entropy calibration).

    P is the histogram cut at the candidate with the clipped tail added to its last bin; Q is P
    merged into ``levels`` equal chunks (the last takes the remainder) and spread back evenly over
    each chunk's non-empty bins.
    """
    counts = counts.double()
    best, best_kl = counts.numel(), float("inf")
    for stop in range(levels, counts.numel() + 1, 16):
        p = counts[:stop].clone()
        p[-1] += counts[stop:].sum()
        nonzero = p > 0
        width = stop // levels  # chunks of equal width, the last one taking the remainder (as TensorRT)
        cut = (levels - 1) * width
        q = torch.cat([_spread(p[:cut].reshape(levels - 1, width), nonzero[:cut].reshape(levels - 1, width)).flatten(),
                       _spread(p[None, cut:], nonzero[None, cut:]).flatten()])
        p, q = p / p.sum(), q / q.sum()
        kl = float((p[nonzero] * (p[nonzero] / q[nonzero]).log()).sum())
        if kl < best_kl:
            best, best_kl = stop, kl
    return best


def _spread(chunks: Tensor, nonzero: Tensor) -> Tensor:
    """Each row's total spread evenly over its non-empty entries (rows: chunks of a histogram)."""
    present = nonzero.sum(1, keepdim=True).clamp_min(1)
    return nonzero * (chunks.sum(1, keepdim=True) / present)


def make_observer(name: str, *, percentile: float = 99.99, momentum: float = 0.01):
    """A fresh observer by config name (see ``OBSERVERS`` in config.py)."""
    if name == "minmax":
        return MinMaxObserver()
    if name == "moving_average":
        return MovingAverageObserver(momentum)
    if name in ("percentile", "mse", "entropy"):
        return HistogramObserver(name, percentile)
    raise UserInputError(f"unknown observer {name!r}; choose minmax, moving_average, percentile, mse or entropy")


def range_qparams(low: float, high: float, symmetric: bool) -> tuple[Tensor, Tensor | None]:
    """int8 scale (and uint8 zero point when asymmetric) of [low, high], as slimkit.formats computes them."""
    return qparams(torch.tensor([low, high]), "int8", symmetric=symmetric, dim=None)


def _checked(x: Tensor) -> Tensor:
    if not torch.isfinite(x).all():
        raise UserInputError("a calibration batch produced NaN/Inf activations; check the model and the inputs")
    return x


def _check_observed(observer) -> None:
    if not observer.batches:
        raise UserInputError("the observer saw no data: run calibrate(model, batches) with at least one batch")
