"""Numeric precision of a training run: autocast and, for fp16, a GradScaler with dynamic loss scaling."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from slimkit.errors import UserInputError


@dataclass
class Precision:
    """What ``TrainConfig.precision`` means on one device.

    ``effective`` is the precision actually used: "tf32" is "fp32" on a CPU, which has no TF32
    (documented fallback, recorded in the run's result rather than raised).
    """

    requested: str
    effective: str
    device_type: str
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @classmethod
    def create(cls, name: str, device: torch.device) -> Precision:
        kind = device.type
        if name in ("bf16", "fp16") and not torch.amp.is_autocast_available(kind):
            raise UserInputError(f"precision={name!r}: torch has no autocast on device {kind!r}; use fp32")
        if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserInputError("precision='bf16': this GPU has no bfloat16 support; use fp16 (with loss scaling)")
        if name == "fp16" and kind == "cpu":
            warnings.warn("precision='fp16' on a CPU: autocast works, but CPUs lack fast fp16 matmuls (measured "
                          "32x slower than fp32 per step, docs/training.md); bf16 is the fast choice on CPU",
                          stacklevel=3)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        scaler = torch.amp.GradScaler(kind) if name == "fp16" else None
        effective = "fp32" if name == "tf32" and kind != "cuda" else name
        return cls(name, effective, kind, dtype, scaler)

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    @contextlib.contextmanager
    def matmul_mode(self):
        """TF32 matmuls for the duration of the run (restored afterwards)."""
        if self.effective != "tf32":
            yield
            return
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Optimizer step; with fp16, skipped by the scaler when a gradient is inf/nan. True if it stepped."""
        if not self.scaler:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale drops exactly when the step was skipped
