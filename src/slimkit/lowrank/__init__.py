"""Low-rank factorization: truncated SVD of Linear layers, Tucker-2 / spatial SVD of Conv2d layers.

>>> report = factorize(model, LowRankConfig(energy=0.9))  # doctest: +SKIP
"""

from slimkit.lowrank.api import LayerReport, LowRankReport, factorize
from slimkit.lowrank.config import CONV_METHODS, LowRankConfig
from slimkit.lowrank.conv import LowRankConv2d
from slimkit.lowrank.svd import LowRankLinear, budget_rank, energy_rank

__all__ = ["CONV_METHODS", "LayerReport", "LowRankConfig", "LowRankConv2d", "LowRankLinear", "LowRankReport",
           "budget_rank", "energy_rank", "factorize"]
