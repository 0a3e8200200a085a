"""One entry point per mode: ``quantize_dynamic``, ``quantize_activations`` and the shared ``convert``."""

from __future__ import annotations

from torch import nn

from slimkit.errors import UserInputError
from slimkit.quantization.activation.config import ActivationQuantConfig
from slimkit.quantization.activation.qat import convert_qat, is_qat
from slimkit.quantization.activation.static import calibrate, convert_static, prepare


def quantize_dynamic(model: nn.Module, config: ActivationQuantConfig = ActivationQuantConfig(),
                     calib=None) -> nn.Module:
    """Replace the model's Linear layers by dynamic Int8Linear (int8 weights, per-token activation scales).

    ``calib`` (model inputs) is needed only with ``smoothquant`` or ``outlier_threshold``.

    >>> quantize_dynamic(minilm, ActivationQuantConfig())  # doctest: +SKIP
    """
    if config.mode != "dynamic":
        raise UserInputError(f"quantize_dynamic needs mode='dynamic', got {config.mode!r}; "
                             "use quantize_activations for static")
    prepare(model, config)
    if config.needs_calibration:
        if calib is None:
            raise UserInputError("smoothquant / outlier_threshold need calibration data: pass calib=[inputs, ...]")
        calibrate(model, calib)
    return convert_static(model)


def quantize_activations(model: nn.Module, config: ActivationQuantConfig, calib=None) -> nn.Module:
    """Dynamic or static int8 in one call (``slimkit.quantize`` calls this for an ActivationQuantConfig).

    >>> quantize_activations(cnn, ActivationQuantConfig(mode="static"), calib=batches)  # doctest: +SKIP
    """
    if config.mode == "dynamic":
        return quantize_dynamic(model, config, calib)
    if config.mode == "qat":
        raise UserInputError("mode='qat' needs training: prepare_qat(model, config), slimkit.train(..., "
                             "callbacks=[QATSchedule(config)]), then convert(model)")
    if calib is None:
        raise UserInputError("static int8 needs calibration data: pass calib=[inputs, ...] "
                             "(on the command line, --calib digits|pycorpus|minilm)")
    prepare(model, config)
    calibrate(model, calib)
    return convert_static(model)


def convert(model: nn.Module) -> nn.Module:
    """Turn a model prepared by ``prepare`` (and calibrated) or ``prepare_qat`` (and trained) into int8."""
    return convert_qat(model) if is_qat(model) else convert_static(model)
