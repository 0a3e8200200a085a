"""Configuration of weight-only post-training quantization."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from slimkit.configs import build_config
from slimkit.errors import UserInputError
from slimkit.formats import check_format
from slimkit.selection import as_patterns

WEIGHT_FORMATS = ("int2", "int3", "int4", "int5", "int6", "int7", "int8", "nf4", "fp8_e4m3", "fp8_e5m2",
                  "fp4_e2m1")
METHODS = ("rtn", "gptq", "awq")


@dataclass(frozen=True)
class WeightQuantConfig:
    """What to quantize and how.

    format: code format of the weights (see ``WEIGHT_FORMATS``).
    group_size: consecutive input features sharing one scale; None for one scale per output channel.
    symmetric: int formats only: zero point 0 (True) or min/max affine (False).
    method: "rtn" (round to nearest), "gptq" (second-order error compensation) or "awq"
        (activation-aware per-input-channel scaling); gptq and awq need calibration data.
    double_quant: quantize the scales themselves to 8 bits in blocks of 256 (QLoRA).
    scale_dtype: "float16" (int4 g128 costs 4 + 16/128 bits per weight) or "float32".
    include / exclude: fnmatch patterns of module names; empty include means every Linear.
    embeddings: also quantize nn.Embedding tables (RTN).
    damp: GPTQ damping, a fraction of the mean Hessian diagonal added to its diagonal.
    block_size: GPTQ lazy-update block width (rounded to whole groups).
    act_order: GPTQ processes columns by decreasing Hessian diagonal (static groups).
    static_groups: GPTQ fixes every group's scale from the original weights before the column
        sweep (always so with act_order) instead of from the error-updated weights.
    mse_clip: GPTQ shrinks each group's range to the ratio (1 down to 0.21) with the least
        sum |q(w) - w|^2.4, as the reference GPTQ's ``mse`` option does.
    awq_scale: GPTQ runs on the weight scaled per input channel by AWQ's searched scale (kept in
        the layer as ``input_scale``), with the Hessian scaled to match.
    skip_padding: gptq/awq leave out calibration rows where the batch's ``attention_mask`` is 0.
    awq_grid: number of alpha values AWQ tries in [0, 1).
    calib_samples: calibration batches used by gptq/awq.
    """

    format: str = "int4"
    group_size: int | None = 128
    symmetric: bool = True
    method: str = "rtn"
    double_quant: bool = False
    scale_dtype: str = "float16"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    embeddings: bool = False
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    static_groups: bool = False
    mse_clip: bool = False
    awq_scale: bool = False
    skip_padding: bool = True
    awq_grid: int = 20
    calib_samples: int = 32

    def __post_init__(self) -> None:
        check_format(self.format)
        if self.format not in WEIGHT_FORMATS:
            raise UserInputError(f"format {self.format!r} is not a weight code format; choose one of "
                                 f"{', '.join(WEIGHT_FORMATS)}")
        if self.method not in METHODS:
            raise UserInputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.scale_dtype not in ("float16", "float32"):
            raise UserInputError(f"scale_dtype={self.scale_dtype!r}: choose 'float16' or 'float32'")
        if self.group_size is not None and self.group_size < 1:
            raise UserInputError(f"group_size={self.group_size}: must be a positive whole number or None")
        if not 0 < self.damp < 1:
            raise UserInputError(f"damp={self.damp}: must lie in (0, 1); 0.01 is the usual choice")
        gptq_only = [name for name in ("act_order", "static_groups", "mse_clip", "awq_scale") if getattr(self, name)]
        if gptq_only and self.method != "gptq":
            raise UserInputError(f"{', '.join(gptq_only)}: GPTQ settings, but method={self.method!r}; "
                                 f"use method='gptq' or leave them off")
        if self.block_size < 1 or self.awq_grid < 2 or self.calib_samples < 1:
            raise UserInputError("block_size and calib_samples must be >= 1 and awq_grid >= 2")
        object.__setattr__(self, "include", as_patterns(self.include))
        object.__setattr__(self, "exclude", as_patterns(self.exclude))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WeightQuantConfig:
        return build_config(cls, data, "weight quantization")
