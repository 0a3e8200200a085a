"""What ``evaluate`` needs of a task: its quality figures and one inference call (data-free protocol)."""

from __future__ import annotations

from typing import Protocol

from torch import nn


class Task(Protocol):
    """A task a model is measured on; the zoo's tasks are in ``slimkit.models.tasks``."""

    name: str
    metric: str  # name of the primary quality figure
    higher_is_better: bool
    default_batch: int

    def quality(self, model: nn.Module) -> dict[str, float]:
        """Quality figures; the primary ``metric`` among them."""

    def example_call(self, model: nn.Module, batch_size: int):
        """A zero-argument function that runs one inference call of ``batch_size`` examples."""

    def calibration(self, batches: int) -> list:
        """``batches`` model inputs drawn from the training split (never from evaluation data)."""

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        """A resumable source of (inputs, targets) batches from the training split, for ``slimkit.train``."""
