"""Configuration of activation quantization (W8A8 dynamic/static, QAT at W8/W4/W2 with A8)."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.selection import as_patterns

MODES = ("dynamic", "static", "qat")
OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "entropy")
GRANULARITIES = ("token", "tensor")


@dataclass(frozen=True)
class ActivationQuantConfig(Config):
    """What to quantize and how; activations are always int8, weights int8 down to int2.

    mode: "dynamic" (activation scales computed at run time), "static" (scales calibrated once
        with an observer) or "qat" (fake quantization while training, then converted).
    weight_bits: bits of the per-output-channel symmetric weight codes (2..8; the int8 GEMM runs them).
    granularity: dynamic mode: one activation scale per "token" (row) or per "tensor".
    observer: static/qat calibration of the activation range (see observers.py).
    percentile: the percentile observer's cut, in percent of |x|.
    momentum: the moving-average observer's (and QAT's) weight of each new batch.
    smoothquant: SmoothQuant's migration strength alpha in [0, 1]; None leaves it out (needs calibration).
    outlier_threshold: LLM.int8() decomposition: input columns whose calibrated |x| max exceeds this
        stay in float; None leaves it out (needs calibration).
    fuse: fold BatchNorm into the preceding conv and ReLU into the preceding Linear/conv first.
    include / exclude: fnmatch patterns of module names; empty include means every Linear/Conv2d.
    calibration_batches: calibration batches used (static, smoothquant, outliers); ``calib_batches`` before
        config version 1.
    lsq: QAT learns the activation and weight scales (LSQ, Esser et al. 2020) instead of observing them.
    freeze_observers_step: QAT step after which the activation ranges stay fixed (None: never).
    fold_bn_step: QAT step at which BatchNorm is folded into its conv (0: before training; None: at convert).
    """

    mode: str = "dynamic"
    weight_bits: int = 8
    granularity: str = "token"
    observer: str = "minmax"
    percentile: float = 99.99
    momentum: float = 0.01
    smoothquant: float | None = None
    outlier_threshold: float | None = None
    fuse: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    calibration_batches: int = 16
    lsq: bool = False
    freeze_observers_step: int | None = None
    fold_bn_step: int | None = 0
    calib_batches: InitVar[int | None] = None  # the old name of calibration_batches, still accepted

    WHAT: ClassVar[str] = "activation quantization"
    ALIASES: ClassVar[dict] = {"calib_batches": "calibration_batches"}

    def __post_init__(self, calib_batches: int | None) -> None:
        if calib_batches is not None:
            object.__setattr__(self, "calibration_batches", calib_batches)
        for name in ("include", "exclude"):
            object.__setattr__(self, name, as_patterns(getattr(self, name)))
        for name, value, choices in (("mode", self.mode, MODES), ("observer", self.observer, OBSERVERS),
                                     ("granularity", self.granularity, GRANULARITIES)):
            if value not in choices:
                raise UserInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if not 2 <= self.weight_bits <= 8:
            raise UserInputError(f"weight_bits={self.weight_bits}: the int8 kernels take 2 to 8 bit weights")
        if self.mode != "dynamic" and self.granularity != "token":
            raise UserInputError("granularity applies to mode='dynamic' only; static and qat use one scale per tensor")
        if not 50 < self.percentile <= 100:
            raise UserInputError(f"percentile={self.percentile}: give a percentile in (50, 100], e.g. 99.99")
        if not 0 < self.momentum <= 1:
            raise UserInputError(f"momentum={self.momentum}: must be in (0, 1]")
        if self.smoothquant is not None and not 0 <= self.smoothquant <= 1:
            raise UserInputError(f"smoothquant alpha={self.smoothquant}: must be in [0, 1], e.g. 0.5")
        if self.outlier_threshold is not None and self.outlier_threshold <= 0:
            raise UserInputError(f"outlier_threshold={self.outlier_threshold}: must be > 0, e.g. 6.0")
        if self.calibration_batches < 1:
            raise UserInputError(f"calibration_batches={self.calibration_batches}: needs at least one batch")
        for name in ("freeze_observers_step", "fold_bn_step"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserInputError(f"{name}={getattr(self, name)}: a step number >= 0, or None")

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "static" or self.smoothquant is not None or self.outlier_threshold is not None
