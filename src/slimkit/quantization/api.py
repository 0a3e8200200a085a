"""``slimkit.quantize``: weight-only post-training quantization of a model's Linear layers."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.formats import EncodedTensor, quantize as quantize_tensor
from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization.activation import ActivationQuantConfig, quantize_activations
from slimkit.quantization.awq import awq_clip, awq_input_scale
from slimkit.calibration.layer_inputs import LayerInputs, sequential_inputs
from slimkit.quantization.config import WeightQuantConfig
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.gptq import gptq
from slimkit.quantization.modules import QuantLinear
from slimkit.selection import TIED_QUANTIZED, check_finite_weight, select_layers


def quantize(model: nn.Module, config: WeightQuantConfig | ActivationQuantConfig = WeightQuantConfig(),
             calib=None) -> nn.Module:
    """Replace the chosen Linear layers of ``model`` by QuantLinear (and, with
    ``config.embeddings``, Embedding tables by QuantEmbedding), in place; returns the model.
    An ActivationQuantConfig instead quantizes weights and activations to int8 (see
    ``slimkit.quantization.activation``).

    ``calib`` (needed by gptq and awq) is a list of model inputs: tensors, or dicts of tensors
    passed as keyword arguments (a tokenizer's output). Every layer touched or skipped gets a
    manifest entry.

    >>> quantize(gpt, WeightQuantConfig("int4", group_size=128, method="gptq"), calib=batches)  # doctest: +SKIP
    """
    if isinstance(config, ActivationQuantConfig):
        return quantize_activations(model, config, calib)
    types = (nn.Linear, nn.Embedding) if config.embeddings else (nn.Linear,)
    chosen, skipped = select_layers(model, config.include, config.exclude, types,
                                    action="to quantize", tied=TIED_QUANTIZED)
    calib = _check_calibration(config, calib)
    if calib is not None:
        _check_batches(model, calib)
    for name, layer in chosen:  # every layer checked before any is changed
        check_finite_weight(name, layer.weight)
    model.eval()
    linears = [(name, layer) for name, layer in chosen if not isinstance(layer, nn.Embedding)]
    for name, layer in chosen:
        if isinstance(layer, nn.Embedding):  # a lookup table: nothing to calibrate, so RTN, before the Linears
            encoded = _encode(layer.weight.detach().float(), config)
            model.set_submodule(name, QuantEmbedding.from_embedding(layer, encoded))
            add_entry(model, _entry(name, config, encoded, {"method": "rtn (embedding)"}))
    layers = (((name, layer, None) for name, layer in linears) if calib is None else
              sequential_inputs(model, linears, calib, skip_padding=config.skip_padding))
    for name, layer, stats in progress(layers, total=len(linears), desc=f"quantizing ({config.method} {config.format})",
                                       unit="layer"):
        encoded, input_scale, notes = _quantize_layer(layer, config, stats)
        model.set_submodule(name, QuantLinear.from_linear(layer, encoded, input_scale))
        add_entry(model, _entry(name, config, encoded, notes))
    for name, module in model.named_modules():  # said, not silent: a CNN's convolutions stay float here
        if isinstance(module, nn.modules.conv._ConvNd) and name not in skipped:
            skipped[name] = ("weight-only quantization covers Linear layers; this convolution stays float "
                             "(static int8 quantizes convolutions: ActivationQuantConfig(mode='static'), "
                             "slimkit quantize --activations int8 --mode static)")
    for name, reason in skipped.items():
        add_entry(model, {"layer": name, "technique": f"weight-only {config.method}", "skipped": reason})
    return model


def _entry(name: str, config: WeightQuantConfig, encoded: EncodedTensor, notes: dict) -> dict:
    return {"layer": name, "technique": f"weight-only {config.method}", "format": config.format,
            "group_size": config.granularity.group_size, "symmetric": config.symmetric, "double_quant": config.double_quant,
            "bits_per_weight": round(encoded.bits_per_element(), 4), "path": "dequant", **notes}


def _quantize_layer(layer: nn.Linear, config: WeightQuantConfig, stats: LayerInputs | None
                    ) -> tuple[EncodedTensor, torch.Tensor | None, dict]:
    weight = layer.weight.detach().float()
    if config.method == "rtn":
        return _encode(weight, config), None, {}
    awq_options = {"granularity": config.granularity, "symmetric": config.symmetric, "grid": config.awq_grid}
    if config.method == "awq":
        scale, alpha = awq_input_scale(weight, stats.sample, config.format, **awq_options)
        clip_scale, clip_zero = awq_clip(weight * scale, stats.sample / scale, config.format, **awq_options)
        return (_encode(weight * scale, config, clip_scale, clip_zero), scale,
                {"awq_alpha": alpha, "calib_tokens": stats.tokens})
    hessian, input_scale, notes = stats.hessian, None, {"calib_tokens": stats.tokens}
    if config.awq_scale:  # x W^T = (x/s)(W s)^T: GPTQ on W s, whose inputs x/s have Hessian H / (s s^T)
        scale, notes["awq_alpha"] = awq_input_scale(weight, stats.sample, config.format, **awq_options)
        if notes["awq_alpha"] is not None:
            input_scale, weight = scale, weight * scale
            hessian = hessian / (scale.double()[:, None] * scale.double()[None, :])
    q, scales, zeros = gptq(weight, hessian, config.format, granularity=config.granularity,
                            symmetric=config.symmetric, damp=config.damp, block_size=config.block_size,
                            act_order=config.act_order, static_groups=config.static_groups,
                            mse_clip=config.mse_clip)
    return _encode(q, config, scales, zeros), input_scale, notes


def _encode(weight: torch.Tensor, config: WeightQuantConfig, scale=None, zero_point=None) -> EncodedTensor:
    return quantize_tensor(weight, config.format, granularity=config.granularity, axis=0, symmetric=config.symmetric,
                           double_quant=config.double_quant, scale=scale, zero_point=zero_point,
                           scale_dtype=getattr(torch, config.scale_dtype))


def _check_batches(model: nn.Module, calib: list) -> None:
    """Refuse NaN/Inf calibration values and a first batch the model cannot run (a wrong feature width,
    say) before any layer is changed: both surfaced deep inside GPTQ as a Cholesky or indexing error. A batch
    is a tensor or a mapping of keyword inputs (a tokenizer's BatchEncoding is a Mapping, not a dict)."""
    for i, batch in enumerate(calib):
        for tensor in batch.values() if isinstance(batch, Mapping) else [batch]:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise UserInputError(f"calibration batch {i} holds NaN/Inf values; calibrate on finite inputs")
    first = calib[0]
    try:
        with torch.no_grad():
            model(**first) if isinstance(first, Mapping) else model(first)
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        shape = ({k: tuple(getattr(v, "shape", ())) for k, v in first.items()} if isinstance(first, Mapping)
                 else tuple(getattr(first, "shape", ())))
        raise UserInputError(f"calibration batch 0 (shape {shape}) does not fit the {type(model).__name__}: "
                             f"{str(exc).splitlines()[0]}; pass inputs the model takes") from None


def _check_calibration(config: WeightQuantConfig, calib) -> list | None:
    if not config.needs_calibration:
        return None
    if calib is None:
        raise UserInputError(f"method {config.method!r} needs calibration data: pass calib=[inputs, ...] "
                             "(on the command line, --calib pycorpus or --calib minilm)")
    calib = list(calib)[: config.calibration_batches]
    if not calib:
        raise UserInputError(f"the calibration set for {config.method!r} is empty; pass at least one batch")
    return calib

