"""PruneConfig: what to prune (weights, N:M groups, channels/heads), by which importance, how much."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.selection import as_patterns

UNSTRUCTURED_METHODS = ("magnitude", "l2", "random", "taylor", "wanda", "sparsegpt")
STRUCTURED_METHODS = ("l1", "magnitude", "l2", "random", "taylor", "bn_scale", "wanda")  # magnitude = l1 here
SCOPES = ("layer", "global")
NEEDS_DATA = ("taylor", "wanda", "sparsegpt")


@dataclass(frozen=True)
class PruneConfig(Config):
    """Unstructured (``sparsity``), N:M (``nm``) and/or structured (``structured`` + ``ratio``) pruning.

    >>> PruneConfig(sparsity=0.9, method="magnitude", scope="global")  # doctest: +SKIP
    >>> PruneConfig(structured=True, ratio=0.5, method="l1")  # doctest: +SKIP
    """

    WHAT: ClassVar[str] = "pruning"

    sparsity: float = 0.0
    """In [0, 1): the fraction of the selected weights set to zero (unstructured)."""
    method: str = "magnitude"
    """Importance. Unstructured: magnitude, l2 (same order as magnitude for single weights), random,
    taylor (|w * dL/dw|), wanda (|w| * ||x|| per output row), sparsegpt (second order, with weight update).
    Structured: l1 (filter L1 norm, Li et al.), l2, random, taylor, bn_scale (|gamma| of the BatchNorm),
    wanda (a channel's input columns in the layers that read it, |W[:, c]|_1 * ||x_c||_2 over the calibration
    tokens: what the channel actually carries, which weight norms alone miss in pretrained LLMs)."""
    scope: str = "layer"
    """"layer": every layer reaches the target; "global": one threshold over all selected layers."""
    layer_sparsity: tuple[tuple[str, float], ...] = ()
    """Per-layer targets (fnmatch pattern, sparsity), the first match wins over ``sparsity``; a dict is accepted."""
    nm: tuple[int, int] | None = None
    """(N, M): keep N of every M consecutive input weights (2:4, 4:8) instead of ``sparsity``."""
    structured: bool = False
    """Remove whole neurons, channels and attention heads physically (through the dependency graph)."""
    ratio: float = 0.0
    """Structured: the fraction of each coupled group's channels (and of attention heads) removed."""
    include: tuple[str, ...] = ()
    """fnmatch patterns over module names (empty: every Linear and Conv2d)."""
    exclude: tuple[str, ...] = ()
    """fnmatch patterns of layers left alone."""
    calibration_batches: int = 8
    """Batches used by taylor, wanda and sparsegpt."""
    seed: int = 0
    """Seed of the random importance."""

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise UserInputError(f"sparsity={self.sparsity!r} must lie in [0, 1); 0.9 zeroes 90% of the weights")
        if isinstance(self.layer_sparsity, dict):
            object.__setattr__(self, "layer_sparsity", tuple(self.layer_sparsity.items()))
        object.__setattr__(self, "layer_sparsity", tuple((str(p), float(s)) for p, s in self.layer_sparsity))
        for pattern, value in self.layer_sparsity:
            if not 0 <= value < 1:
                raise UserInputError(f"layer_sparsity[{pattern!r}]={value!r} must lie in [0, 1)")
        if self.scope not in SCOPES:
            raise UserInputError(f"scope={self.scope!r}: choose one of {', '.join(SCOPES)}")
        if self.scope == "global" and self.layer_sparsity:
            raise UserInputError("layer_sparsity sets per-layer targets, which one global threshold would ignore; "
                                 "use scope='layer' with layer_sparsity, or leave layer_sparsity out")
        if not 0 <= self.ratio < 1:
            raise UserInputError(f"ratio={self.ratio!r} must lie in [0, 1); 0.5 removes half of the channels")
        if self.structured and self.ratio == 0:
            raise UserInputError("structured=True needs ratio > 0 (the fraction of channels to remove)")
        if self.nm is not None:
            object.__setattr__(self, "nm", tuple(self.nm))
            n, m = self.nm
            if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
                raise UserInputError(f"nm={self.nm!r}: need whole numbers 0 < N < M, e.g. (2, 4)")
        methods = STRUCTURED_METHODS if self.structured else UNSTRUCTURED_METHODS
        if self.method not in methods:
            kind = "structured" if self.structured else "unstructured"
            raise UserInputError(f"method={self.method!r} is not among the {kind} importances: {', '.join(methods)}")
        if self.scope == "global" and self.method in ("wanda", "sparsegpt"):
            raise UserInputError(f"method={self.method!r} compares weights within a layer; use scope='layer'")
        if self.calibration_batches < 1:
            raise UserInputError(f"calibration_batches={self.calibration_batches!r} must be at least 1")
        for name in ("include", "exclude"):
            object.__setattr__(self, name, as_patterns(getattr(self, name)))

    @property
    def needs_calibration(self) -> bool:
        return self.method in NEEDS_DATA

    def to_dict(self) -> dict:
        return {**super().to_dict(), "layer_sparsity": dict(self.layer_sparsity)}
