"""Static int8 post-training quantization: ``prepare`` -> ``calibrate`` -> ``convert``.

``prepare`` fuses Conv+BN(+ReLU) / Linear+ReLU and hooks an observer onto the input of every
chosen Linear and Conv2d; ``calibrate`` runs batches through the model; ``convert`` replaces each
observed layer by Int8Linear / Int8Conv2d with the calibrated activation scale. Layers that stay
float are listed in the manifest with the reason.

>>> prepare(cnn, ActivationQuantConfig(mode="static", observer="percentile"))  # doctest: +SKIP
>>> calibrate(cnn, digits_batches); convert(cnn)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization.activation.config import ActivationQuantConfig
from slimkit.quantization.activation.fuse import fuse
from slimkit.quantization.activation.modules import Int8Conv2d, Int8Linear, encode_weight, onednn_conv_missing
from slimkit.quantization.activation.observers import make_observer, range_qparams
from slimkit.quantization.activation.outliers import outlier_columns, smooth_factors, smoothing_helps
from slimkit.selection import TIED_QUANTIZED, select_layers

_ATTR = "_slimkit_activation_preparation"
SAMPLE_ROWS = 64  # input rows kept per calibration batch and layer for SmoothQuant's check


@dataclass
class Preparation:
    """What ``prepare`` attached to a model: observers and per-column input maxima, per layer name."""

    config: ActivationQuantConfig
    observers: dict = field(default_factory=dict)
    channel_absmax: dict[str, Tensor] = field(default_factory=dict)
    samples: dict[str, list[Tensor]] = field(default_factory=dict)  # input rows SmoothQuant checks its gain on
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    handles: list = field(default_factory=list)
    batches: int = 0


def prepare(model: nn.Module, config: ActivationQuantConfig = ActivationQuantConfig(mode="static")) -> nn.Module:
    """Fuse (``config.fuse``) and attach observers in place; returns the model (eval mode)."""
    model.eval()
    notes = fuse(model)[1] if config.fuse else []
    types = (nn.Linear,) if config.mode == "dynamic" else (nn.Linear, nn.Conv2d)
    chosen, skipped = select_layers(model, config.include, config.exclude, types,
                                    action="to quantize", tied=TIED_QUANTIZED)
    if config.mode == "dynamic":
        skipped.update({name: "dynamic mode quantizes Linear layers; use mode='static' for convolutions"
                        for name, m in model.named_modules() if isinstance(m, nn.Conv2d)})
    preparation = Preparation(config, skipped=skipped, notes=notes)
    for name, layer in chosen:
        reason = _unsupported(layer)
        if reason:
            preparation.skipped[name] = reason
            continue
        preparation.observers[name] = make_observer(config.observer, percentile=config.percentile,
                                                    momentum=config.momentum)
        preparation.handles.append(layer.register_forward_pre_hook(_observing(preparation, name, layer)))
    object.__setattr__(model, _ATTR, preparation)
    return model


def _observing(preparation: Preparation, name: str, layer: nn.Module):
    track_columns = isinstance(layer, nn.Linear) and (preparation.config.smoothquant is not None
                                                      or preparation.config.outlier_threshold is not None)

    def hook(_module, args):
        x = args[0].detach()
        preparation.observers[name].observe(x)
        if track_columns:
            absmax = x.reshape(-1, x.shape[-1]).abs().amax(0).float()  # (in,)
            previous = preparation.channel_absmax.get(name)
            preparation.channel_absmax[name] = absmax if previous is None else torch.maximum(previous, absmax)
        if track_columns and preparation.config.smoothquant is not None:
            rows = x.reshape(-1, x.shape[-1])
            keep = torch.linspace(0, rows.shape[0] - 1, min(SAMPLE_ROWS, rows.shape[0])).long()
            preparation.samples.setdefault(name, []).append(rows[keep].float())
    return hook


def _unsupported(layer: nn.Module) -> str | None:
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}: the int8 convolution pads with zeros only"
    if isinstance(layer, nn.Conv2d) and isinstance(layer.padding, str):
        return f"padding={layer.padding!r}: give the padding as numbers to quantize this convolution"
    return None


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable) -> nn.Module:
    """Run ``batches`` (tensors, or dicts of tensors passed as keyword arguments) through a prepared model."""
    preparation = _preparation(model, "calibrate")
    count = 0
    for batch in progress(batches, desc="calibrating activations", unit="batch"):
        model(**batch) if isinstance(batch, Mapping) else model(batch)
        count += 1
        if count == preparation.config.calibration_batches:
            break
    if count == 0:
        raise UserInputError("calibration got zero batches; pass at least one model input, "
                             "e.g. calibrate(model, task.calibration(16))")
    preparation.batches += count
    return model


@torch.no_grad()
def convert_static(model: nn.Module) -> nn.Module:
    """Replace every observed layer by its int8 module, in place; returns the model."""
    preparation = _preparation(model, "convert")
    for handle in preparation.handles:
        handle.remove()
    config = preparation.config
    for name, observer in preparation.observers.items():
        layer = model.get_submodule(name)
        if not observer.batches and config.needs_calibration:
            preparation.skipped[name] = "never ran on the calibration data; left in float"
            continue
        sample = torch.cat(preparation.samples[name]) if name in preparation.samples else None
        module, notes = int8_module(layer, config, observer, preparation.channel_absmax.get(name), sample)
        model.set_submodule(name, module)
        add_entry(model, {"layer": name, "technique": f"activation int8 {config.mode}",
                          "format": f"w{config.weight_bits}a8", **notes})
    for name, reason in preparation.skipped.items():
        add_entry(model, {"layer": name, "technique": f"activation int8 {config.mode}", "skipped": reason})
    for note in preparation.notes:
        add_entry(model, {"layer": note.split(":")[0], "technique": "fusion", "note": note})
    object.__delattr__(model, _ATTR)
    return model


def int8_module(layer: nn.Module, config: ActivationQuantConfig, observer, channel_absmax: Tensor | None,
                sample: Tensor | None = None):
    """The Int8Linear / Int8Conv2d for a float ``layer``, and its manifest notes."""
    relu = bool(getattr(layer, "relu", False))
    weight = layer.weight.detach().float()
    if isinstance(layer, nn.Conv2d):
        scale, zero = range_qparams(*observer.range(), symmetric=False)
        missing = onednn_conv_missing()
        module = Int8Conv2d(encode_weight(weight, config.weight_bits), layer.bias, act_scale=scale,
                            act_zero_point=zero, stride=layer.stride, padding=layer.padding,
                            dilation=layer.dilation, groups=layer.groups, relu=relu)
        return module, {"activation": f"uint8 per tensor ({config.observer})", "relu_fused": relu,
                        "kernel": f"float fallback: {missing}" if missing else "onednn qconv2d"}
    notes, smooth, index, outlier_weight = {}, None, None, None
    if channel_absmax is not None and config.outlier_threshold is not None:
        index = outlier_columns(channel_absmax, config.outlier_threshold)
        notes["outlier_columns"] = 0 if index is None else index.numel()
        if index is not None:
            outlier_weight = weight[:, index].clone()
            weight = weight.index_fill(1, index, 0.0)
            channel_absmax = channel_absmax.index_fill(0, index, 0.0)
    if channel_absmax is not None and config.smoothquant is not None:
        s = smooth_factors(channel_absmax, weight, config.smoothquant)
        inliers = sample if index is None else sample.index_fill(1, index, 0.0)
        if smoothing_helps(inliers, weight, s, config.weight_bits, config.mode == "dynamic"):
            smooth, weight = 1.0 / s, weight * s
        notes["smoothquant"] = config.smoothquant if smooth is not None else "left out: no gain on calibration rows"
    act_scale = None
    if config.mode != "dynamic":
        low, high = observer.range()
        if channel_absmax is not None:  # the observer saw x; the kernel quantizes the inliers times smooth
            high = float((channel_absmax if smooth is None else channel_absmax * smooth).max())
            low = -high
        act_scale = range_qparams(low, high, symmetric=True)[0]
    module = Int8Linear(encode_weight(weight, config.weight_bits), layer.bias, mode=config.mode if config.mode ==
                        "dynamic" else "static", granularity=config.granularity, act_scale=act_scale, smooth=smooth,
                        outlier_index=index, outlier_weight=outlier_weight, relu=relu)
    activation = f"int8 per {config.granularity}" if config.mode == "dynamic" else f"int8 per tensor ({config.observer})"
    return module, {"activation": activation, "relu_fused": relu, "kernel": "torch._int_mm", **notes}


def _preparation(model: nn.Module, verb: str) -> Preparation:
    preparation = getattr(model, _ATTR, None)
    if preparation is None:
        raise UserInputError(f"{verb} before prepare: call prepare(model, ActivationQuantConfig(mode='static')) "
                             f"first (prepare_qat for QAT)")
    return preparation


def is_prepared(model: nn.Module) -> bool:
    return getattr(model, _ATTR, None) is not None

