"""How techniques plug into ``slimkit.train``: a callback is any object with some of these methods.

Pruning schedules update masks in ``on_step_end``; QAT freezes observers or folds BatchNorm at a
step; DP-SGD clips and noises gradients in ``on_before_optimizer_step``; distillation replaces
``loss_fn`` instead. Every method is optional and receives the live ``TrainState``.

>>> class PrintLoss:
...     def on_step_end(self, state):
...         if state.step % 100 == 0:
...             print(state.step, state.loss)
>>> train(model, data, config, callbacks=[PrintLoss()])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Protocol

from slimkit.training.loop import TrainState


class Callback(Protocol):
    def on_train_start(self, state: TrainState) -> None:
        """Before the first step (after a resume has restored the state)."""

    def on_before_optimizer_step(self, state: TrainState) -> None:
        """Gradients are final: accumulated, normalised, unscaled (fp16) and clipped."""

    def on_step_end(self, state: TrainState) -> None:
        """After the optimizer step; ``state.step`` counts the steps done."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last step."""
