"""Configuration of weight-only post-training quantization."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.formats import Granularity, PerGroup, PerTensor, as_granularity, check_format
from slimkit.selection import as_patterns

WEIGHT_FORMATS = ("int2", "int3", "int4", "int5", "int6", "int7", "int8", "nf4", "fp8_e4m3", "fp8_e5m2",
                  "fp4_e2m1")
METHODS = ("rtn", "gptq", "awq")
_GRANULARITY = "granularity"  # group_size not given: the granularity field stands


@dataclass(frozen=True)
class WeightQuantConfig(Config):
    """What to quantize and how.

    format: code format of the weights (see ``WEIGHT_FORMATS``).
    granularity: which weights share one scale: PerGroup(n) (n consecutive input features), PerChannel()
        (one per output channel) or PerTensor() (rtn only); the format primitive takes it as it is.
        ``group_size=n`` (None: per channel) is accepted as before and turned into this value.
    symmetric: int formats only: zero point 0 (True) or min/max affine (False).
    method: "rtn" (round to nearest), "gptq" (second-order error compensation) or "awq"
        (activation-aware per-input-channel scaling); gptq and awq need calibration data.
    double_quant: quantize the scales themselves to 8 bits in blocks of 256 (QLoRA).
    scale_dtype: "float16" (int4 g128 costs 4 + 16/128 bits per weight) or "float32".
    include / exclude: fnmatch patterns of module names; empty include means every Linear.
    embeddings: also quantize nn.Embedding tables (RTN).
    damp: GPTQ damping, a fraction of the mean Hessian diagonal added to its diagonal.
    block_size: GPTQ lazy-update block width (rounded to whole groups).
    act_order: GPTQ processes columns by decreasing Hessian diagonal (static groups); None (the default)
        means on for GPTQ, as llm-compressor and AutoGPTQ users run it: on SmolLM2-135M int4 g128 it
        takes the perplexity increase from +5.53 to +2.64 (docs/benchmarks.md).
    static_groups: GPTQ fixes every group's scale from the original weights before the column
        sweep (always so with act_order) instead of from the error-updated weights.
    mse_clip: GPTQ shrinks each group's range to the ratio (1 down to 0.21) with the least
        sum |q(w) - w|^2.4, as the reference GPTQ's ``mse`` option does.
    awq_scale: GPTQ runs on the weight scaled per input channel by AWQ's searched scale (kept in
        the layer as ``input_scale``), with the Hessian scaled to match.
    skip_padding: gptq/awq leave out calibration rows where the batch's ``attention_mask`` is 0.
    awq_grid: number of alpha values AWQ tries in [0, 1).
    calibration_batches: calibration batches used by gptq/awq (``calib_samples`` before config version 1).
    """

    WHAT: ClassVar[str] = "weight quantization"
    ALIASES: ClassVar[dict] = {"calib_samples": "calibration_batches"}


    format: str = "int4"
    granularity: Granularity = PerGroup(128)
    symmetric: bool = True
    method: str = "rtn"
    double_quant: bool = False
    scale_dtype: str = "float16"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    embeddings: bool = False
    damp: float = 0.01
    block_size: int = 128
    act_order: bool | None = None
    static_groups: bool = False
    mse_clip: bool = False
    awq_scale: bool = False
    skip_padding: bool = True
    awq_grid: int = 20
    calibration_batches: int = 32
    calib_samples: InitVar[int | None] = None  # the old name of calibration_batches, still accepted
    group_size: InitVar[int | None] = _GRANULARITY  # the old spelling of granularity, still accepted

    def __post_init__(self, calib_samples: int | None, group_size) -> None:
        if calib_samples is not None:
            object.__setattr__(self, "calibration_batches", calib_samples)
        if group_size is not _GRANULARITY:
            object.__setattr__(self, "granularity", group_size)
        object.__setattr__(self, "granularity", as_granularity(self.granularity))
        if isinstance(self.granularity, PerTensor) and self.method != "rtn":
            raise UserInputError(f"method={self.method!r} sweeps scales per row; use PerChannel() or PerGroup(n) "
                                 "(PerTensor() works with rtn)")
        check_format(self.format)
        if self.format not in WEIGHT_FORMATS:
            raise UserInputError(f"format {self.format!r} is not a weight code format; choose one of "
                                 f"{', '.join(WEIGHT_FORMATS)}")
        if self.method not in METHODS:
            raise UserInputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.scale_dtype not in ("float16", "float32"):
            raise UserInputError(f"scale_dtype={self.scale_dtype!r}: choose 'float16' or 'float32'")
        if not 0 < self.damp < 1:
            raise UserInputError(f"damp={self.damp}: must lie in (0, 1); 0.01 is the usual choice")
        if self.act_order is None:  # the default: on where it applies
            object.__setattr__(self, "act_order", self.method == "gptq")
        gptq_only = [name for name in ("act_order", "static_groups", "mse_clip", "awq_scale") if getattr(self, name)]
        if gptq_only and self.method != "gptq":
            raise UserInputError(f"{', '.join(gptq_only)}: GPTQ settings, but method={self.method!r}; "
                                 f"use method='gptq' or leave them off")
        if self.block_size < 1 or self.awq_grid < 2 or self.calibration_batches < 1:
            raise UserInputError("block_size and calibration_batches must be >= 1 and awq_grid >= 2")
        object.__setattr__(self, "include", as_patterns(self.include))
        object.__setattr__(self, "exclude", as_patterns(self.exclude))

    @property
    def needs_calibration(self) -> bool:
        return self.method != "rtn"
