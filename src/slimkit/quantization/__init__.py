"""Quantization: weight-only PTQ (RTN, GPTQ, AWQ) into packed QuantLinear/QuantEmbedding layers, and
activation quantization (dynamic/static int8, QAT, SmoothQuant, LLM.int8) into Int8Linear/Int8Conv2d.

``slimkit.quantize(model, config, calib)`` takes either config: a WeightQuantConfig (weight-only) or
an ActivationQuantConfig (dynamic or static int8; QAT goes through prepare_qat / train / convert).
"""

from slimkit.quantization.activation import (
    ActivationQuantConfig,
    Int8Conv2d,
    Int8Linear,
    QATSchedule,
    calibrate,
    convert,
    fuse,
    prepare,
    prepare_qat,
    quantize_activations,
    quantize_dynamic,
)
from slimkit.quantization.api import quantize
from slimkit.quantization.config import METHODS, WEIGHT_FORMATS, WeightQuantConfig
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.modules import QuantLinear

__all__ = ["METHODS", "ActivationQuantConfig", "Int8Conv2d", "Int8Linear", "QATSchedule", "QuantEmbedding",
           "QuantLinear", "WEIGHT_FORMATS", "WeightQuantConfig", "calibrate", "convert", "fuse", "prepare",
           "prepare_qat", "quantize", "quantize_activations", "quantize_dynamic"]
