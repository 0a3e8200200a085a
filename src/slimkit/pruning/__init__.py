"""Pruning: unstructured (magnitude, Taylor, Wanda, SparseGPT...), N:M, and structured with physical
removal of channels, neurons and heads through a dependency graph; schedules and sensitivity.

>>> report = prune(model, PruneConfig(sparsity=0.9, scope="global"))  # doctest: +SKIP
"""

from slimkit.pruning.api import PruneReport, prune
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.masks import attach_mask, masks, reapply_masks, remove_masks

__all__ = ["PruneConfig", "PruneReport", "attach_mask", "masks", "prune", "reapply_masks", "remove_masks"]
