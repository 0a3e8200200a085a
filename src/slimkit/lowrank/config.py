"""LowRankConfig: which layers to factorize and how their ranks are chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.selection import as_patterns

CONV_METHODS = ("tucker2", "spatial", "skip")


@dataclass(frozen=True)
class LowRankConfig(Config):
    """Truncated SVD of Linear layers and Tucker-2 / spatial SVD of Conv2d layers.

    Exactly one of ``rank``, ``energy`` and ``param_budget`` says how each layer's rank is chosen.

    >>> LowRankConfig(param_budget=0.5, include=("*.mlp.*",)).rule
    'param_budget=0.5'
    """

    WHAT: ClassVar[str] = "low-rank"

    rank: int | None = None
    """The same rank for every layer (Tucker-2: for both channel modes, capped at each mode's size)."""
    energy: float | None = None
    """In (0, 1]: the smallest rank r with sum_{i<r} s_i^2 >= energy * sum_i s_i^2 (per mode for Tucker-2)."""
    param_budget: float | None = None
    """In (0, 1): the fraction of each layer's weight parameters the factors may keep."""
    include: tuple[str, ...] = ()
    """fnmatch patterns over module names; empty means every Linear and Conv2d."""
    exclude: tuple[str, ...] = ()
    """fnmatch patterns of layers to leave alone."""
    conv: str = "tucker2"
    """Conv2d layers (groups=1): "tucker2" (1x1, kxk core, 1x1), "spatial" (kx1 then 1xk) or "skip".
    A 1x1 convolution is a Linear over channels: it always gets a plain SVD (two 1x1 convs)."""

    def __post_init__(self) -> None:
        given = [name for name in ("rank", "energy", "param_budget") if getattr(self, name) is not None]
        if len(given) != 1:
            raise UserInputError(f"choose exactly one way to pick ranks: rank=, energy= or param_budget= "
                                 f"(got {', '.join(given) or 'none'})")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0):
            raise UserInputError(f"rank={self.rank!r}: must be a positive whole number")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise UserInputError(f"energy={self.energy!r}: must lie in (0, 1]; 0.9 keeps 90% of the squared "
                                 "singular values")
        if self.param_budget is not None and not 0 < self.param_budget < 1:
            raise UserInputError(f"param_budget={self.param_budget!r}: must lie in (0, 1); 0.5 keeps half of "
                                 "each layer's parameters")
        if self.conv not in CONV_METHODS:
            raise UserInputError(f"conv={self.conv!r}: choose one of {', '.join(CONV_METHODS)}")
        for name in ("include", "exclude"):
            object.__setattr__(self, name, as_patterns(getattr(self, name)))

    @property
    def rule(self) -> str:
        """The rank rule as text, e.g. "energy=0.9"."""
        name = next(n for n in ("rank", "energy", "param_budget") if getattr(self, n) is not None)
        return f"{name}={getattr(self, name)}"

