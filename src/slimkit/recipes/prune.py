"""Prune, then fine-tune on the task's training data with the masks kept: what the CLI and the demo rows run."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimkit import registry
from slimkit.pruning.api import PruneReport
from slimkit.pruning.config import PruneConfig
from slimkit.training import TrainConfig


@dataclass(frozen=True)
class PruneRecipe:
    """One-shot pruning plus an optional fine-tune (learning-rate rewinding: pass the original schedule).

    >>> PruneRecipe(PruneConfig(sparsity=0.9, scope="global"), TrainConfig(steps=100, lr=1e-3))  # doctest: +SKIP
    """

    prune: PruneConfig
    finetune: TrainConfig | None = None
    batch_size: int = 64

    def to_dict(self) -> dict:
        return {"prune": self.prune.to_dict(), "finetune": self.finetune.to_dict() if self.finetune else None,
                "batch_size": self.batch_size}


def task_calibration(model: nn.Module, config: PruneConfig, task: str | None = None) -> list | None:
    """Calibration batches from the task's training split, as the registered prune technique draws them:
    (inputs, targets) for taylor, inputs for the other data-driven importances, None for the rest."""
    from slimkit.models.tasks import get_task, infer_task
    from slimkit.techniques import prune_calibration

    return prune_calibration(model, config, registry.Inputs(data=get_task(task or infer_task(model))))


def run_recipe(model: nn.Module, recipe: PruneRecipe, task=None) -> PruneReport:
    """Prune ``model`` in place as ``recipe`` says and fine-tune it (pruned weights stay zero), through the
    registered prune and finetune techniques. ``task``: a task, a task name, or None (the model's own)."""
    from slimkit.models.tasks import get_task, infer_task

    if task is None or isinstance(task, str):
        task = get_task(task or infer_task(model))
    inputs = registry.Inputs(data=task, batch_size=recipe.batch_size)
    report = registry.apply(model, "prune", recipe.prune, inputs).report
    if recipe.finetune is not None:
        registry.apply(model, "finetune", recipe.finetune, inputs)
    return report
