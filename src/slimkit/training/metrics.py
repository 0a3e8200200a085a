"""Where a run's metrics go: metrics.jsonl always, TensorBoard event files when tensorboard is installed."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch


class MetricsLog:
    """Appends one JSON object per logged step to ``<log_dir>/metrics.jsonl`` (nothing without a log_dir).

    A resumed run appends to the same file; a reader keeps the last line of each step.
    """

    def __init__(self, log_dir: str | None) -> None:
        self.path = Path(log_dir) / "metrics.jsonl" if log_dir else None
        self._file = None
        self._tensorboard = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return
        self._tensorboard = SummaryWriter(log_dir=str(self.path.parent))

    @property
    def tensorboard(self) -> bool:
        return self._tensorboard is not None

    def write(self, step: int, values: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._tensorboard:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tensorboard:
            self._tensorboard.close()


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: torch's peak allocated bytes. CPU: the process's peak resident set (all of Python included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes
