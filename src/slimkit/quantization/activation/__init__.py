"""Activation quantization: dynamic and static int8, fusion, QAT, and outlier handling (SmoothQuant, LLM.int8).

>>> from slimkit.quantization import ActivationQuantConfig, quantize_dynamic
>>> quantize_dynamic(model, ActivationQuantConfig())  # doctest: +SKIP
"""

from slimkit.quantization.activation.api import convert, quantize_activations, quantize_dynamic
from slimkit.quantization.activation.config import MODES, OBSERVERS, ActivationQuantConfig
from slimkit.quantization.activation.fuse import fuse
from slimkit.quantization.activation.modules import Int8Conv2d, Int8Linear
from slimkit.quantization.activation.qat import QATSchedule, prepare_qat
from slimkit.quantization.activation.static import calibrate, prepare

__all__ = ["MODES", "OBSERVERS", "ActivationQuantConfig", "Int8Conv2d", "Int8Linear", "QATSchedule", "calibrate",
           "convert", "fuse", "prepare", "prepare_qat", "quantize_activations", "quantize_dynamic"]
