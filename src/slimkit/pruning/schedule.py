"""Pruning schedules as ``slimkit.train`` callbacks, and rewinding (lottery tickets).

- ``KeepMasks``: re-zeroes pruned weights after every optimizer step (whatever the optimizer did).
- ``GradualPruning``: Zhu & Gupta's polynomial schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3,
  raising the sparsity of the masks every ``every`` steps between ``start`` and ``end``.
- ``Snapshot`` + ``rewind``: weight rewinding (Frankle et al.): reset the surviving weights to an
  early checkpoint and retrain with the masks kept. Learning-rate rewinding is retraining with the
  original schedule (pass the original TrainConfig to ``slimkit.train``) from the pruned weights.

What runs the training loop (fine-tuning with the masks kept, iterative pruning) is in
``slimkit.training.finetune``: pruning is a transform and never trains by itself.

>>> train(model, batches, TrainConfig(steps=300), callbacks=[GradualPruning(model, PruneConfig(sparsity=0.9),
...       start=50, end=250)])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.pruning.api import prune
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.masks import reapply_masks


class KeepMasks:
    """Callback: pruned weights stay exactly zero after every optimizer step."""

    def on_step_end(self, state) -> None:
        reapply_masks(state.model)


def polynomial_sparsity(step: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): the target sparsity at ``step`` (``initial`` before ``start``, ``final`` after ``end``)."""
    if step <= start:
        return initial
    done = min(1.0, (step - start) / max(1, end - start))
    return final + (initial - final) * (1 - done) ** 3


class GradualPruning:
    """Callback: raise the sparsity of ``model`` along the polynomial schedule, pruning every ``every`` steps."""

    def __init__(self, model: nn.Module, config: PruneConfig, *, start: int, end: int, every: int = 10,
                 data=None) -> None:
        if config.structured or config.nm:
            raise UserInputError("gradual pruning schedules unstructured sparsity; prune N:M or structured one-shot")
        if not 0 <= start < end:
            raise UserInputError(f"start={start}, end={end}: need 0 <= start < end (steps)")
        self.model, self.config, self.start, self.end, self.every, self.data = model, config, start, end, every, data
        self.reports = []

    def on_step_end(self, state) -> None:
        step = state.step
        if step >= self.start and (step - self.start) % self.every == 0 and step <= self.end + self.every - 1:
            target = polynomial_sparsity(step, self.config.sparsity, self.start, self.end)
            if target > 0:
                # masks only grow: a pruned weight is zero, so it scores lowest and stays pruned
                self.reports.append(prune(self.model, dataclasses.replace(self.config, sparsity=target), self.data))
        reapply_masks(state.model)


class Snapshot:
    """Callback: keep a copy of the weights after ``step`` optimizer steps (the lottery-ticket rewind point)."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_train_start(self, state) -> None:
        if self.step == 0:
            self.state = copy.deepcopy(state.model.state_dict())

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            self.state = copy.deepcopy(state.model.state_dict())


def rewind(model: nn.Module, snapshot: dict) -> None:
    """Reset every weight to ``snapshot`` (e.g. ``Snapshot.state``), keeping the masks: pruned weights stay zero."""
    if snapshot is None:
        raise UserInputError("the snapshot is empty: the training run did not reach the snapshot step")
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, value in snapshot.items():
            if name in own:
                own[name].copy_(value)
    reapply_masks(model)
