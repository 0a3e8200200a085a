"""DP-SGD (Abadi et al. 2016) inside ``slimkit.train``: per-sample clipping, Gaussian noise, RDP accounting.

Each logical batch (all its accumulated micro-batches) releases sum_i clip_C(g_i) + N(0, sigma^2 C^2),
divided by the expected batch size. ``make_private`` returns a ``PrivateTraining`` that plugs into the
loop three ways: ``batches`` (random or Poisson-sampled batches), ``loss_fn`` (clips each example's
gradient, see grads.py) and itself as the callback (noise once per optimizer step, accounting,
epsilon in the progress bar, the guarantee in the model's manifest).

>>> private = make_private(mlp, None, digits().train, target_epsilon=3.0, steps=100, batch_size=512)  # doctest: +SKIP
>>> result = private.train(TrainConfig(steps=100, lr=2e-2, clip_grad_norm=None))  # doctest: +SKIP
>>> private.epsilon()  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.manifest import add_entry
from slimkit.privacy.accountant import RDPAccountant, noise_for_epsilon
from slimkit.privacy.grads import GhostClipping, VmapClipping, non_linear_parameters, per_example_cross_entropy
from slimkit.privacy.layers import check_per_sample_safe

ENGINES = ("auto", "ghost", "vmap")


@dataclass(frozen=True)
class DPConfig(Config):
    """How DP-SGD trains; give exactly one of ``noise_multiplier`` and ``target_epsilon``.

    >>> DPConfig(target_epsilon=3.0, steps=300, batch_size=256).max_grad_norm
    1.0
    """

    WHAT: ClassVar[str] = "DP-SGD"

    noise_multiplier: float | None = None
    """sigma: the noise's standard deviation is sigma * max_grad_norm on the summed gradient."""
    target_epsilon: float | None = None
    """Calibrate sigma (bisection on the accountant) so that ``steps`` steps spend at most this epsilon."""
    max_grad_norm: float = 1.0
    """C: each example's gradient is scaled down to this L2 norm."""
    delta: float = 1e-5
    """The delta of (epsilon, delta)-DP; keep it well below 1 / (training examples)."""
    batch_size: int = 256
    """Expected examples per optimizer step (the logical batch, split over ``accumulate`` micro-batches)."""
    steps: int | None = None
    """Optimizer steps planned (needed with target_epsilon; training longer is refused then)."""
    poisson: bool = False
    """Poisson sampling (each example joins a batch with probability batch_size / N, as the accountant
    assumes); otherwise each batch is batch_size examples drawn without replacement."""
    engine: str = "auto"
    """Per-sample gradients: "ghost" (Linear layers only, near non-private memory), "vmap" (any
    per-sample-safe model, B copies of the gradients), or "auto" (ghost when it applies)."""
    seed: int = 0
    """Seed of the batch sampling."""

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise UserInputError("give exactly one of noise_multiplier= (sigma) and target_epsilon=")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise UserInputError(f"noise_multiplier={self.noise_multiplier} must be >= 0")
        if self.target_epsilon is not None and self.steps is None:
            raise UserInputError("target_epsilon needs steps= (the optimizer steps the budget must cover)")
        if not self.max_grad_norm > 0:
            raise UserInputError(f"max_grad_norm={self.max_grad_norm} must be positive")
        if not 0 < self.delta < 1:
            raise UserInputError(f"delta={self.delta} must lie in (0, 1); 1e-5 or below 1/N is usual")
        for name in ("batch_size", "steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserInputError(f"{name}={value!r} must be a whole number >= 1")
        if self.engine not in ENGINES:
            raise UserInputError(f"engine={self.engine!r} is not one of {', '.join(ENGINES)}")



class PrivateBatches:
    """Logical batches sampled from (x, y), handed out as ``accumulate`` micro-batches each (resumable)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, poisson: bool, seed: int) -> None:
        self.x, self.y, self.batch_size, self.poisson = x, y, batch_size, poisson
        self.accumulate = 1  # set by PrivateTraining.on_train_start from TrainConfig.accumulate
        self.generator = torch.Generator().manual_seed(seed)
        self._pending: list = []

    def next(self):
        if not self._pending:
            n = len(self.y)
            if self.poisson:
                idx = (torch.rand(n, generator=self.generator) < self.batch_size / n).nonzero().flatten()
            else:
                idx = torch.randperm(n, generator=self.generator)[:self.batch_size]
            self._pending = list(zip(self.x[idx].tensor_split(self.accumulate), self.y[idx].tensor_split(self.accumulate)))
        return self._pending.pop(0)

    def state_dict(self) -> dict:  # checkpoints are taken between steps, when nothing is pending
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._pending = []


class PrivateTraining:
    """DP-SGD for one model: ``batches`` + ``loss_fn`` + this callback, for ``slimkit.train``."""

    def __init__(self, model: nn.Module, optimizer, x: Tensor, y: Tensor, config: DPConfig, loss=None) -> None:
        check_per_sample_safe(model)
        self.model, self.optimizer, self.config, self.examples = model, optimizer, config, len(y)
        self.sample_rate = min(1.0, config.batch_size / len(y))
        self.noise_multiplier = config.noise_multiplier
        if config.target_epsilon is not None:
            self.noise_multiplier = noise_for_epsilon(config.target_epsilon, self.sample_rate, config.steps,
                                                      config.delta)
        engine, outside = config.engine, non_linear_parameters(model)
        if engine == "auto":
            engine = "vmap" if outside else "ghost"
        elif engine == "ghost" and outside:
            raise UserInputError("engine='ghost' needs every trainable parameter in an nn.Linear; these are not: "
                                 + ", ".join(outside[:6]) + "; use engine='vmap' or 'auto'")
        self.engine = engine
        self.clipper = GhostClipping(model) if engine == "ghost" else VmapClipping()
        self.per_example_loss = loss or per_example_cross_entropy
        self.batches = PrivateBatches(x, y, config.batch_size, config.poisson, config.seed)
        self.accountant = RDPAccountant()
        self.last_norms: Tensor | None = None  # per-sample norms (before clipping) of the last micro-batch
        self._examples_this_step = 0

    def loss_fn(self, model: nn.Module, batch) -> tuple[Tensor, int]:
        """slimkit.train's loss: summed per-example losses whose gradient is the clipped sum."""
        x, y = batch
        if len(y) == 0:  # Poisson sampling can draw an empty batch: zero gradients, noise still added
            return sum(p.sum() * 0 for p in model.parameters() if p.requires_grad), 0
        loss, self.last_norms = self.clipper.clipped_loss(model, x, y, self.per_example_loss,
                                                          self.config.max_grad_norm)
        self._examples_this_step += len(y)
        return loss, len(y)

    def on_train_start(self, state) -> None:
        if state.model is not self.model:
            raise UserInputError("this PrivateTraining was made for another model; call make_private on this one")
        if state.config.clip_grad_norm is not None:
            raise UserInputError("TrainConfig.clip_grad_norm must be None with DP-SGD: per-sample clipping to "
                                 "max_grad_norm replaces it (clipping the noisy-to-be sum would void the guarantee)")
        if self.config.steps is not None and self.config.target_epsilon is not None \
                and state.config.steps > self.config.steps:
            raise UserInputError(f"TrainConfig.steps={state.config.steps} is more than the {self.config.steps} "
                                 f"steps the noise was calibrated for (target epsilon {self.config.target_epsilon})")
        self.batches.accumulate = state.config.accumulate
        if state.step > self.accountant.steps:  # resumed from a checkpoint: those steps spent privacy too
            self.accountant.step(self.noise_multiplier, self.sample_rate, state.step - self.accountant.steps)

    def on_before_optimizer_step(self, state) -> None:
        """The loop left sum_i clip(g_i) / (examples this step) in .grad: add N(0, sigma^2 C^2) to the sum and
        divide by the expected batch size (the actual size would leak through the scale)."""
        std = self.noise_multiplier * self.config.max_grad_norm
        expected = self.sample_rate * self.examples
        for group in state.optimizer.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                noise = torch.normal(0.0, std, p.shape, device=p.device, dtype=p.dtype)
                p.grad.mul_(self._examples_this_step).add_(noise).div_(expected)

    def on_step_end(self, state) -> None:
        self.accountant.step(self.noise_multiplier, self.sample_rate)
        self._examples_this_step = 0
        state.postfix["eps"] = f"{self.epsilon():.3g}"

    def on_train_end(self, state) -> None:
        self.clipper.close()
        add_entry(self.model, {"layer": "*", "technique": "dp-sgd", **self.guarantee()})

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default: the config's)."""
        return self.accountant.epsilon(self.config.delta if delta is None else delta)

    def guarantee(self) -> dict:
        """What was spent and how: for the manifest, the metrics and reports."""
        return {"epsilon": self.epsilon(), "delta": self.config.delta, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.config.max_grad_norm, "sample_rate": self.sample_rate,
                "steps": self.accountant.steps, "poisson_sampling": self.config.poisson, "engine": self.engine,
                "accountant": "RDP of the sampled Gaussian (Mironov et al. 2019), Balle et al. 2020 conversion"}

    def train(self, config, **kwargs):
        """``slimkit.train`` with this DP-SGD plugged in (the batches, loss and callback)."""
        from slimkit.training import train

        callbacks = [self, *kwargs.pop("callbacks", ())]
        return train(self.model, self.batches, config, loss_fn=self.loss_fn, callbacks=callbacks,
                     optimizer=self.optimizer, **kwargs)


def make_private(model: nn.Module, optimizer, data, config: DPConfig | None = None, *, loss=None,
                 **settings) -> PrivateTraining:
    """Prepare DP-SGD training of ``model`` on ``data`` ((x, y) tensors, or an object with .x and .y).

    ``optimizer``: the optimizer ``train`` uses (None: slimkit.train builds it from TrainConfig).
    ``settings``: DPConfig fields (or pass ``config``). ``loss(output, targets) -> (B,)`` per-example
    losses (default: cross-entropy). Warns when delta >= 1/N (such a delta allows leaking a record).

    >>> private = make_private(model, None, (x, y), noise_multiplier=1.1, max_grad_norm=1.0, batch_size=64)
    """
    if config is not None and settings:
        raise UserInputError(f"give DP-SGD settings either as config= or as keywords, not both ({', '.join(settings)})")
    config = config or DPConfig(**settings)
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    if len(x) != len(y) or len(y) == 0:
        raise UserInputError(f"data has {len(x)} inputs and {len(y)} targets; DP-SGD needs the same non-zero count")
    if config.delta >= 1 / len(y):
        warnings.warn(f"delta={config.delta:g} >= 1/N = {1 / len(y):.3g} (N={len(y)} examples): a mechanism that "
                      "publishes one random record outright meets such a delta; use delta < 1/N", stacklevel=2)
    return PrivateTraining(model, optimizer, x, y, config, loss)

