"""TrainConfig: every knob of ``slimkit.train``, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig(Config):
    """How ``slimkit.train`` trains.

    >>> TrainConfig(steps=200, lr=1e-3, precision="bf16", accumulate=4, checkpointing="blocks")  # doctest: +SKIP
    """

    WHAT: ClassVar[str] = "training"

    steps: int = 100
    """Optimizer steps (each made of ``accumulate`` micro-batches)."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or L2 (SGD)."""
    warmup: int = 0
    """Steps of linear warm-up from lr/warmup to lr."""
    schedule: str = "cosine"
    """After warm-up: "cosine" decay to 0 at the last step, or "constant"."""
    optimizer: str = "adamw"
    """"adamw" (torch), "adamw8bit" (slimkit.optim.AdamW8bit) or "sgd" (momentum 0.9)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates."""
    precision: str = "fp32"
    """"fp32"; "tf32" (TF32 matmuls on CUDA; on CPU, which has none, plain fp32); "bf16" or "fp16":
    autocast over fp32 weights (fp16 adds a GradScaler with dynamic loss scaling)."""
    accumulate: int = 1
    """Micro-batches per optimizer step; the loss is normalised by the targets of all of them."""
    checkpointing: str | tuple[str, ...] | None = None
    """Activation checkpointing: None, "blocks" (each transformer block) or module-name patterns."""
    clip_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    max_bad_steps: int = 5
    """Stop with an error after this many consecutive steps with a non-finite loss."""
    seed: int = 0
    """Seeds torch's RNG at the start (dropout, LoRA init...)."""
    threads: int | None = None
    """torch threads while training (None: leave as is)."""
    log_dir: str | None = None
    """Write metrics.jsonl here (and TensorBoard event files when tensorboard is installed)."""
    log_every: int = 10
    """Steps between metric lines."""
    checkpoint_dir: str | None = None
    """Save a resumable training checkpoint here every ``checkpoint_every`` steps and at the end."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    resume: bool = False
    """Continue from the checkpoint in ``checkpoint_dir`` if there is one."""

    def __post_init__(self) -> None:
        _positive("steps", self.steps)
        _positive("accumulate", self.accumulate)
        _positive("max_bad_steps", self.max_bad_steps)
        _positive("log_every", self.log_every)
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        if not self.lr > 0:
            raise UserInputError(f"lr={self.lr} must be positive")
        if self.weight_decay < 0:
            raise UserInputError(f"weight_decay={self.weight_decay} must be >= 0")
        if not 0 <= self.warmup < self.steps:
            raise UserInputError(f"warmup={self.warmup} must be in [0, steps={self.steps})")
        if not all(0 <= b < 1 for b in self.betas) or len(self.betas) != 2:
            raise UserInputError(f"betas={self.betas} must be two numbers in [0, 1)")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise UserInputError(f"clip_grad_norm={self.clip_grad_norm} must be positive or None")
        if self.checkpoint_every < 0:
            raise UserInputError(f"checkpoint_every={self.checkpoint_every} must be >= 0")
        if self.resume and not self.checkpoint_dir:
            raise UserInputError("resume=True needs checkpoint_dir (where the checkpoint is)")
        if self.threads is not None:
            _positive("threads", self.threads)
        if isinstance(self.checkpointing, list):
            object.__setattr__(self, "checkpointing", tuple(self.checkpointing))
        object.__setattr__(self, "betas", tuple(self.betas))



def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name}={value!r} must be a whole number >= 1")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"{name}={value!r} is not one of {', '.join(choices)}")
