"""compressed-tensors: the Hugging Face folder layout that transformers and vLLM load.

slimkit's integer codes are already compressed-tensors' codes: a symmetric intN code is the
signed value plus 2^(N-1), which is what ``pack-quantized`` stores, and an asymmetric code with its
unsigned zero point is the signed pair plus the same offset. So every weight is written from the
stored codes and scales, never requantized:

| slimkit layer | format | tensors per layer (N out, K in, g group) |
|---|---|---|
| QuantLinear intN (N<=8), group or channel | pack-quantized | weight_packed int32 [N, ceil(K*N/32)], weight_scale [N, K/g], weight_shape, weight_zero_point int32 (asymmetric, packed along dim 0) |
| QuantLinear fp8_e4m3 | naive-quantized | weight float8_e4m3fn [N, K], weight_scale |
| Int8Linear (int8 weights, int8 activations) | int-quantized | weight int8 [N, K], weight_scale [N, 1], input_scale [1] when static |

config.json gets ``quantization_config`` with the keys and values compressed-tensors 0.20.1 writes.
Asymmetric pack-quantized folders load in transformers 5.25 only with
``CompressedTensorsConfig(dequantize=True)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from slimkit.deployment import ExportRefused
from slimkit.errors import ArtifactError
from slimkit.formats import EncodedTensor, pack, unpack
from slimkit.formats.registry import INT_BITS
from slimkit.quantization.activation.modules import Int8Linear, weight_codes
from slimkit.quantization.ggml_layers import GGMLEmbedding, GGMLLinear, only_gguf
from slimkit.quantization.modules import QuantLinear

CT_VERSION = "0.20.1"  # the compressed-tensors release whose config.json layout this writes


def write_compressed_tensors(model: nn.Module, directory: Path) -> None:
    """config.json (with quantization_config) and model.safetensors of a transformers ``model``."""
    config = getattr(model, "config", None)
    if not hasattr(config, "save_pretrained"):
        raise ExportRefused(f"a {type(model).__name__} is not a transformers model, and compressed-tensors folders "
                            "are loaded by transformers/vLLM; export it with --to onnx or --to gguf instead")
    dtype = getattr(model, "dtype", torch.float32)
    tensors, schemes, ignored = _tensors_and_schemes(model, dtype)
    if not schemes:
        raise ExportRefused("the model has no quantized layer; quantize it first (slimkit quantize) or save it "
                            "as a plain Hugging Face folder (--to hf)")
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data["architectures"] = [type(model).__name__]  # as save_pretrained records it: readers pick the head class by it
    data["quantization_config"] = quantization_config(schemes, ignored)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def quantization_config(schemes: dict[str, dict], ignored: list[str]) -> dict:
    """The ``quantization_config`` for layers named in ``schemes`` (name -> scheme dict), one group per scheme."""
    groups: list[tuple[dict, list[str]]] = []
    for name, scheme in schemes.items():
        match = next((names for known, names in groups if known == scheme), None)
        if match is None:
            groups.append((scheme, [name]))
        else:
            match.append(name)
    single = len(groups) == 1
    config_groups = {f"group_{i}": {**scheme, "output_activations": None,
                                    "targets": ["Linear"] if single else names}
                     for i, (scheme, names) in enumerate(groups)}
    formats = {scheme["format"] for scheme, _ in groups}
    return {"config_groups": config_groups, "format": formats.pop() if len(formats) == 1 else "mixed-precision",
            "global_compression_ratio": None, "ignore": ignored, "kv_cache_scheme": None,
            "moe_sparsity_config": None, "quant_method": "compressed-tensors", "quantization_status": "compressed",
            "sparsity_config": {}, "transform_config": {}, "version": CT_VERSION}


def pack_int32(codes: Tensor, bits: int) -> Tensor:
    """Unsigned codes (rows, cols) < 2^bits packed as compressed-tensors does: each row's codes padded
    with zeros to a multiple of 32 and laid out as one LSB-first bit stream of little-endian int32
    words, truncated to ceil(cols * bits / 32) words per row.

    >>> pack_int32(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8), 4)
    tensor([[-2023406815]], dtype=torch.int32)
    """
    rows, cols = codes.shape
    values = torch.nn.functional.pad(codes.to(torch.int64), (0, -cols % 32)).reshape(rows, -1, 32)  # (rows, W, 32)
    out = torch.zeros(rows, values.shape[1], bits, dtype=torch.int64)  # (rows, W, bits) words
    for i in range(32):
        word, shift = divmod(i * bits, 32)
        out[..., word] |= values[..., i] << shift
        if shift + bits > 32:  # a code straddling two words: its high bits start the next one
            out[..., word + 1] |= values[..., i] >> (32 - shift)
    words = (out & 0xFFFFFFFF).reshape(rows, -1)[:, : math.ceil(cols * bits / 32)]
    return (words - ((words >> 31) << 32)).to(torch.int32)  # reinterpret as signed int32


def _tensors_and_schemes(model: nn.Module, dtype: torch.dtype) -> tuple[dict[str, Tensor], dict[str, dict], list[str]]:
    tensors: dict[str, Tensor] = {}
    schemes: dict[str, dict] = {}
    ignored: list[str] = []
    handled: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            schemes[name], parts = _quant_linear(name, module, dtype)
        elif isinstance(module, Int8Linear):
            schemes[name], parts = _int8_linear(name, module, dtype)
        elif isinstance(module, (GGMLLinear, GGMLEmbedding)):
            raise ExportRefused(only_gguf(name, module, "compressed-tensors"))
        elif type(module).__module__.startswith("slimkit."):
            raise ExportRefused(f"layer {name!r} is a slimkit {type(module).__name__}, which compressed-tensors cannot "
                                "represent; export a model whose layers are Linear, QuantLinear or Int8Linear")
        else:
            if isinstance(module, nn.Linear):
                ignored.append(name)
            continue
        handled.add(name)
        tensors.update({f"{name}.{key}": value.contiguous() for key, value in parts.items()})
        if getattr(module, "bias", None) is not None:
            tensors[f"{name}.bias"] = module.bias.detach().to(dtype).contiguous()
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        owner = key.rpartition(".")[0]
        if owner in handled or value.data_ptr() in seen:  # a tied copy (lm_head = embeddings) is stored once
            continue
        seen.add(value.data_ptr())
        tensors[key] = value.detach().contiguous()
    return tensors, schemes, ignored


def _quant_linear(name: str, module: QuantLinear, dtype: torch.dtype) -> tuple[dict, dict[str, Tensor]]:
    enc = module.encoded()
    out_features, in_features = enc.shape
    if module.input_scale is not None:
        raise ExportRefused(f"layer {name!r} divides its input by AWQ's per-channel scale, which compressed-tensors "
                            "has no place for; quantize with --method gptq or rtn to export it")
    grouped = enc.granularity == "group"
    if enc.axis != 0 or enc.granularity not in ("group", "channel") or (grouped and in_features % enc.group_size):
        raise ExportRefused(f"layer {name!r}: {enc.granularity} scales over {in_features} inputs (group size "
                            f"{enc.group_size}) cannot be written; compressed-tensors needs per-channel scales or "
                            "groups that divide the input width")
    scale = _exact(enc.scales(), dtype, name)
    weights = {"dynamic": False, "group_size": enc.group_size if grouped else None, "strategy": enc.granularity,
               "symmetric": enc.symmetric}
    if enc.fmt in INT_BITS:
        bits = INT_BITS[enc.fmt]
        codes = unpack(enc.codes, bits, enc.numel).reshape(enc.shape)
        parts = {"weight_packed": pack_int32(codes, bits), "weight_scale": scale,
                 "weight_shape": torch.tensor([out_features, in_features], dtype=torch.int64)}
        if not enc.symmetric:
            parts["weight_zero_point"] = pack_int32(enc.zero_point.T, bits).T  # packed along output features
        return _scheme("pack-quantized", {**weights, "num_bits": bits, "type": "int"}), parts
    if enc.fmt == "fp8_e4m3":
        codes = unpack(enc.codes, 8, enc.numel).reshape(enc.shape)
        parts = {"weight": codes.view(torch.float8_e4m3fn), "weight_scale": scale}
        return _scheme("naive-quantized", {**weights, "num_bits": 8, "type": "float"}), parts
    raise ExportRefused(f"layer {name!r} is {enc.fmt}, which compressed-tensors cannot store exactly; "
                        "quantize to int2..int8 or fp8_e4m3 for this target "
                        "(nf4 has no exact form in any export target)")


def _int8_linear(name: str, module: Int8Linear, dtype: torch.dtype) -> tuple[dict, dict[str, Tensor]]:
    if module.smooth is not None or module.outlier_index is not None or module.relu:
        raise ExportRefused(f"layer {name!r} uses SmoothQuant scales, LLM.int8 outliers or a fused ReLU, which "
                            "compressed-tensors cannot represent; quantize activations without them to export")
    enc = module.encoded()
    if enc.fmt != "int8":
        raise ExportRefused(f"layer {name!r} has {enc.fmt} weights with int8 activations; int-quantized needs "
                            "int8 weights (use weight bits 8)")
    codes, scale = weight_codes(enc)
    parts = {"weight": codes, "weight_scale": _exact(scale[:, None], dtype, name)}
    static = module.mode == "static"
    if static:
        parts["input_scale"] = _exact(module.act_scale.reshape(1), dtype, name)
    activations = {"dynamic": not static, "group_size": None, "num_bits": 8,
                   "strategy": "tensor" if static or module.granularity != "token" else "token",
                   "symmetric": True, "type": "int"}
    weights = {"dynamic": False, "group_size": None, "num_bits": 8, "strategy": "channel", "symmetric": True,
               "type": "int"}
    return _scheme("int-quantized", weights, activations), parts


def _scheme(fmt: str, weights: dict, activations: dict | None = None) -> dict:
    return {"format": fmt, "input_activations": activations, "weights": weights}


def _exact(values: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """``values`` in the model's dtype, refused if that changes any of them (they would no longer be slimkit's)."""
    converted = values.detach().float().to(dtype)
    if not torch.equal(converted.float(), values.detach().float()):
        raise ExportRefused(f"layer {name!r}: its scales do not fit the model's {dtype} exactly; convert the model "
                            "to float32 before exporting (model.float())")
    return converted.contiguous()


def unpack_int32(words: Tensor, bits: int, cols: int) -> Tensor:
    """Inverse of ``pack_int32``: unsigned uint8 codes (rows, cols).

    >>> unpack_int32(torch.tensor([[-2023406815]], dtype=torch.int32), 4, 8)
    tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8)
    """
    rows = words.shape[0]
    groups = math.ceil(cols / 32)
    padded = torch.nn.functional.pad(words.to(torch.int64) & 0xFFFFFFFF, (0, groups * bits - words.shape[1]))
    padded = padded.reshape(rows, groups, bits)
    values = torch.zeros(rows, groups, 32, dtype=torch.int64)
    for i in range(32):
        word, shift = divmod(i * bits, 32)
        value = padded[..., word] >> shift
        if shift + bits > 32:
            value = value | (padded[..., word + 1] << (32 - shift))
        values[..., i] = value & (2**bits - 1)
    return values.reshape(rows, -1)[:, :cols].to(torch.uint8)


def load_folder(directory: Path) -> nn.Module:
    """A transformers model from a compressed-tensors folder; its quantized Linear layers become QuantLinear
    holding the folder's own codes and scales."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from slimkit.files import read_safetensors
    from slimkit.untrusted import read_quantized_config

    data, quant = read_quantized_config(directory)
    config = AutoConfig.for_model(**data)
    model = AutoModelForCausalLM.from_config(config).eval()
    tensors = read_safetensors(directory / "model.safetensors", "the compressed-tensors folder is incomplete")
    schemes = _schemes_by_layer(model, quant, directory)
    for name, scheme in schemes.items():
        parts = {key.removeprefix(f"{name}."): tensors.pop(key) for key in list(tensors) if key.startswith(f"{name}.")}
        layer = model.get_submodule(name)
        model.set_submodule(name, _layer_from(parts, scheme, layer, f"{directory}: layer {name!r}"))
    try:
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{directory / 'model.safetensors'}: tensors do not fit the configured model: "
                            f"{exc}") from None
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied and k.rpartition(".")[0] not in schemes]
    if missing or result.unexpected_keys:
        raise ArtifactError(f"{directory / 'model.safetensors'}: tensors missing {missing[:3]} or unexpected "
                            f"{result.unexpected_keys[:3]} for the model config.json describes")
    model.tie_weights()
    return model


def _schemes_by_layer(model: nn.Module, quant: dict, directory: Path) -> dict[str, dict]:
    ignored = set(quant.get("ignore") or [])
    out = {}
    for group in (quant.get("config_groups") or {}).values():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name not in ignored and (
                    "Linear" in group["targets"] or name in group["targets"]):
                out[name] = group
    if not out:
        raise ArtifactError(f"{directory}/config.json: quantization_config targets no Linear layer of the model")
    return out


def _layer_from(parts: dict[str, Tensor], scheme: dict, layer: nn.Linear, where: str) -> nn.Module:
    """The QuantLinear (weight-only schemes) or Int8Linear (int-quantized, int8 activations) of one layer."""
    if scheme.get("format") == "int-quantized":
        return _int8_linear_from(parts, scheme, layer, where)
    return QuantLinear(layer.in_features, layer.out_features, _encoded_from(parts, scheme, layer, where),
                       parts.get("bias"))


def _int8_linear_from(parts: dict[str, Tensor], scheme: dict, layer: nn.Linear, where: str) -> Int8Linear:
    weights, acts = scheme.get("weights") or {}, scheme.get("input_activations") or {}
    static = acts.get("dynamic") is False
    supported = (weights.get("num_bits") == 8 and weights.get("type") == "int" and weights.get("symmetric", True)
                 and weights.get("strategy") == "channel" and acts.get("num_bits") == 8 and acts.get("type") == "int"
                 and acts.get("symmetric", True) and acts.get("strategy") in (("tensor",) if static else ("token", "tensor")))
    if not supported:
        raise ArtifactError(f"{where}: int-quantized scheme with weights {weights} and activations {acts} is not "
                            "imported; slimkit imports int8 per-channel symmetric weights with int8 symmetric "
                            "activations, dynamic per token or per tensor, or static per tensor")
    out_features, in_features = layer.out_features, layer.in_features
    weight, scale = parts.get("weight"), parts.get("weight_scale")
    if (weight is None or weight.dtype != torch.int8 or tuple(weight.shape) != (out_features, in_features)
            or scale is None or scale.numel() != out_features):
        raise ArtifactError(f"{where}: int-quantized needs an int8 weight ({out_features}, {in_features}) and "
                            f"{out_features} weight scales; found weight "
                            f"{None if weight is None else (weight.dtype, tuple(weight.shape))} and "
                            f"{None if scale is None else tuple(scale.shape)} scales")
    if static and (parts.get("input_scale") is None or parts["input_scale"].numel() != 1):
        raise ArtifactError(f"{where}: static per-tensor activations need one input_scale")
    codes = (weight.to(torch.int16) + 128).to(torch.uint8).reshape(-1)
    enc = EncodedTensor("int8", (out_features, in_features), "channel", 0, None, True, pack(codes, 8),
                        scale.float().reshape(out_features, 1).contiguous(), None)
    return Int8Linear(enc, parts.get("bias"), mode="static" if static else "dynamic",
                      granularity="token" if acts.get("strategy") == "token" else "tensor",
                      act_scale=parts["input_scale"].float() if static else None)


def _encoded_from(parts: dict[str, Tensor], scheme: dict, layer: nn.Linear, where: str) -> EncodedTensor:
    weights = scheme.get("weights") or {}
    fmt, grouped = scheme.get("format"), weights.get("strategy") == "group"
    if weights.get("strategy") not in ("group", "channel") or scheme.get("input_activations") is not None:
        raise ArtifactError(f"{where}: scheme {fmt!r} with {weights.get('strategy')!r} weights and activations "
                            f"{scheme.get('input_activations')} is not imported; slimkit imports weight-only "
                            "group or channel schemes")
    out_features, in_features = layer.out_features, layer.in_features
    group = weights["group_size"] if grouped else in_features
    scale = parts.get("weight_scale")
    if scale is None or tuple(scale.shape) != (out_features, in_features // group):
        raise ArtifactError(f"{where}: weight_scale {None if scale is None else tuple(scale.shape)} disagrees with "
                            f"quantization_config ({weights.get('strategy')}, group {group}) for a "
                            f"({out_features}, {in_features}) layer")
    if "weight_g_idx" in parts and not torch.equal(parts["weight_g_idx"].long(), torch.arange(in_features) // group):
        raise ArtifactError(f"{where}: an act-order weight_g_idx puts columns outside their contiguous group, "
                            "which slimkit's group layout cannot hold")
    scale = scale.float() if scale.dtype == torch.bfloat16 else scale
    layout = dict(shape=(out_features, in_features), granularity="group" if grouped else "channel", axis=0,
                  group_size=group if grouped else None, scale=scale.contiguous())
    if fmt == "pack-quantized" and weights.get("type") == "int":
        bits = weights["num_bits"]
        if "weight_packed" not in parts or parts["weight_packed"].shape[0] != out_features:
            raise ArtifactError(f"{where}: weight_packed is missing or has the wrong number of rows")
        codes = unpack_int32(parts["weight_packed"], bits, in_features)
        zero = None
        if not weights.get("symmetric", True):
            zero = unpack_int32(parts["weight_zero_point"].T, bits, out_features).T.contiguous()
        return EncodedTensor(fmt=f"int{bits}", symmetric=zero is None, codes=pack(codes.reshape(-1), bits),
                             zero_point=zero, **layout)
    if fmt in ("naive-quantized", "float-quantized") and weights.get("type") == "float" and weights["num_bits"] == 8:
        codes = parts["weight"].view(torch.uint8).reshape(-1)
        return EncodedTensor(fmt="fp8_e4m3", symmetric=True, codes=codes.clone(), zero_point=None, **layout)
    raise ArtifactError(f"{where}: format {fmt!r} with {weights.get('type')} {weights.get('num_bits')}-bit weights "
                        "is not imported; slimkit imports pack-quantized int and fp8 weight-only layers and int-quantized "
                        "W8A8 layers")
