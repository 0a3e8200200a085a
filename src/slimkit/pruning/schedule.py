"""Pruning schedules as ``slimkit.train`` callbacks, iterative pruning, and rewinding (lottery tickets).

- ``KeepMasks``: re-zeroes pruned weights after every optimizer step (whatever the optimizer did).
- ``GradualPruning``: Zhu & Gupta's polynomial schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3,
  raising the sparsity of the masks every ``every`` steps between ``start`` and ``end``.
- ``iterative_prune``: prune a little, fine-tune, repeat, reaching the target in ``rounds`` steps.
- ``Snapshot`` + ``rewind``: weight rewinding (Frankle et al.): reset the surviving weights to an
  early checkpoint and retrain with the masks kept. Learning-rate rewinding is retraining with the
  original schedule (pass the original TrainConfig to ``slimkit.train``) from the pruned weights.

>>> train(model, batches, TrainConfig(steps=300), callbacks=[GradualPruning(model, PruneConfig(sparsity=0.9),
...       start=50, end=250)])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.pruning.api import prune
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.masks import reapply_masks
from slimkit.training import TrainConfig, train


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


def iterative_prune(model: nn.Module, config: PruneConfig, data, train_config: TrainConfig, *, rounds: int = 3,
                    calibration=None) -> list:
    """Prune to ``config.sparsity`` in ``rounds`` equal-ratio steps, fine-tuning with ``train_config`` after each.

    Round r keeps (1 - s)^(r / rounds) of the weights. Returns the prune reports.
    """
    if rounds < 1:
        raise UserInputError(f"rounds={rounds} must be at least 1")
    reports = []
    for r in range(1, rounds + 1):
        target = 1 - (1 - config.sparsity) ** (r / rounds)
        reports.append(prune(model, dataclasses.replace(config, sparsity=target), calibration))
        finetune_masked(model, data, train_config)
    return reports


def finetune_masked(model: nn.Module, data, config: TrainConfig):
    """``slimkit.train`` with the pruning masks kept applied and subnormals flushed (see
    flush_denormals: a sparse model's fine-tuning is otherwise up to 60x slower on x86).

    >>> finetune_masked(pruned_cnn, batches, TrainConfig(steps=50))  # doctest: +SKIP
    """
    with flush_denormals():
        return train(model, data, config, callbacks=[KeepMasks()])


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


@contextlib.contextmanager
def flush_denormals():
    """Treat subnormal floats as zero on the CPU while the block runs (torch's default, off, after it).

    Fine-tuning a heavily pruned model produces subnormal values (gradients of weights whose inputs
    were pruned away, and Adam's squares of them); x86 handles those in microcode, which made 20
    steps of the 90%-sparse digits CNN take 39 s instead of 0.6 s. Flushing them changes values
    below 1.2e-38 only.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
