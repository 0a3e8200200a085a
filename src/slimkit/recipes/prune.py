"""Prune, then fine-tune on the task's training data with the masks kept: what the CLI and the demo rows run."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimkit.pruning.api import PruneReport, prune
from slimkit.pruning.config import PruneConfig
from slimkit.training import TrainConfig
from slimkit.training.finetune import finetune_masked


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
    """Calibration batches from the task's training split: (inputs, targets) for taylor, inputs otherwise."""
    if not config.needs_calibration:
        return None
    from slimkit.models.tasks import get_task, infer_task

    task_obj = get_task(task or infer_task(model))
    if config.method == "taylor":
        source = task_obj.training_batches(model, 64, seed=config.seed)
        return [source.next() for _ in range(config.calibration_batches)]
    return task_obj.calibration(config.calibration_batches)


def run_recipe(model: nn.Module, recipe: PruneRecipe, task: str | None = None) -> PruneReport:
    """Prune ``model`` in place as ``recipe`` says and fine-tune it (pruned weights stay zero)."""
    from slimkit.models.tasks import get_task, infer_task

    report = prune(model, recipe.prune, task_calibration(model, recipe.prune, task))
    if recipe.finetune is not None:
        batches = get_task(task or infer_task(model)).training_batches(model, recipe.batch_size,
                                                                        recipe.finetune.seed)
        finetune_masked(model, batches, recipe.finetune)
    return report

