"""Weight-only post-training quantization: RTN, GPTQ, AWQ into packed QuantLinear/QuantEmbedding layers."""

from slimkit.quantization.api import quantize
from slimkit.quantization.config import METHODS, WEIGHT_FORMATS, WeightQuantConfig
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.modules import QuantLinear

__all__ = ["METHODS", "QuantEmbedding", "QuantLinear", "WEIGHT_FORMATS", "WeightQuantConfig", "quantize"]
