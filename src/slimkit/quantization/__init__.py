"""Weight-only post-training quantization: RTN, GPTQ, AWQ into packed QuantLinear layers."""

from slimkit.quantization.api import quantize
from slimkit.quantization.config import METHODS, WEIGHT_FORMATS, WeightQuantConfig
from slimkit.quantization.modules import QuantLinear

__all__ = ["METHODS", "QuantLinear", "WEIGHT_FORMATS", "WeightQuantConfig", "quantize"]
