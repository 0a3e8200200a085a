"""ONNX (onnxruntime): the model traced to model.onnx, each quantized Linear written from its codes.

| slimkit layer | ONNX nodes |
|---|---|
| QuantLinear int4 / int8, per channel or in groups of 16..256 (a power of two dividing the input width) | ``com.microsoft::MatMulNBits`` (bits 4 or 8): B uint8 [N, K/g, g*bits/8] (4-bit: two codes a byte, low nibble first, slimkit's own packing), scales [N*K/g] (a channel's scale repeated over its blocks, g the largest block dividing K), zero points when asymmetric (symmetric codes are q + 2^(bits-1), MatMulNBits' default zero point): exact |
| QuantEmbedding int4 / int8, per row or in groups of 16..256 | ``com.microsoft::GatherBlockQuantized`` (same codes, scales and zero points): exact |
| Int8Conv2d (static int8 convolution, calibrated uint8 input) | ``QuantizeLinear`` + ``DequantizeLinear`` of the input, per-channel ``DequantizeLinear`` of the int8 weight, ``Conv`` (+ ``Relu``): the QDQ form onnxruntime runs as int8; the same grid values as slimkit |
| Int8Linear static (calibrated activation scale) | ``QuantizeLinear`` + ``DequantizeLinear`` of the input (int8, slimkit's scale), per-channel ``DequantizeLinear`` of the int8 weight, ``MatMul``: the grid slimkit computes on |
| Int8Linear dynamic (W8A8); QuantLinear int8 per channel over a width no block divides (warned) | ``DynamicQuantizeLinear`` + ``MatMulInteger`` + ``Mul`` (onnxruntime's dynamic int8 pattern): weights int8 [K, N] with slimkit's per-channel scales, activations quantized per tensor at run time |

AWQ's input scale becomes a ``Div`` before the product. The int8 pattern quantizes activations per tensor
(asymmetric uint8), where slimkit's Int8Linear uses one scale per token: its outputs are close to, not
equal to, slimkit's. Everything else is traced as float. Needs the ``onnx`` package to write the file.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.deployment import ExportRefused
from slimkit.errors import MissingDependencyError
from slimkit.formats import unpack
from slimkit.formats.registry import INT_BITS
from slimkit.quantization.activation.modules import Int8Conv2d, Int8Linear, weight_codes
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.ggml_layers import GGMLEmbedding, GGMLLinear, only_gguf
from slimkit.quantization.modules import QuantLinear

FILE_NAME = "model.onnx"
OPSET = 17


def write_onnx(model: nn.Module, directory: Path, example: dict[str, Tensor] | None = None) -> None:
    """``directory``/model.onnx; ``example`` (input name -> tensor) defaults to token ids and attention mask for
    transformers models."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to serialise)
    except ImportError:
        raise MissingDependencyError("ONNX export needs the onnx package: pip install onnx") from None
    example = example or _default_example(model)
    # the exporter puts the wrapper back in its own mode afterwards, recursively: it must be the model's
    wrapper = _Positional(model, list(example)).train(model.training)
    with _onnx_layers(model), warnings.catch_warnings():
        # the tracer's notes on Python branches fixed at trace time (transformers' mask code) and the legacy
        # exporter's deprecation notice say nothing the user can act on
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, tuple(example.values()), str(directory / FILE_NAME),
                          dynamo=False, opset_version=OPSET, input_names=list(example), output_names=["output"],
                          dynamic_axes={name: {0: "batch", 1: "sequence"} if t.dim() > 1 else {0: "batch"}
                                        for name, t in example.items()})


def _default_example(model: nn.Module) -> dict[str, Tensor]:
    if callable(getattr(model, "example_input", None)):  # slimkit's reference models
        return {"x": model.example_input()}
    if hasattr(getattr(model, "config", None), "to_dict"):
        # with an explicit mask transformers builds it without torch.diff, which the exporter lacks
        return {"input_ids": torch.zeros(1, 8, dtype=torch.long), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    raise ExportRefused(f"a {type(model).__name__} needs an example input to trace; call "
                        "slimkit.deployment.onnx.write_onnx(model, folder, example={'x': tensor})")


class _Positional(nn.Module):
    """Calls the model with keyword inputs (and no key/value cache), returning one tensor."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: Tensor) -> Tensor:
        config = getattr(self.model, "config", None)
        if not hasattr(config, "to_dict"):  # not a transformers model: positional inputs
            out = self.model(*inputs)
        else:
            cache = {"use_cache": False} if hasattr(config, "use_cache") else {}
            out = self.model(**dict(zip(self.names, inputs)), **cache)
        if isinstance(out, Tensor):
            return out
        return out.logits if hasattr(out, "logits") else out[0]


TORCH_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Identity)  # slimkit's subclasses of these compute with torch's ops


@contextlib.contextmanager
def _onnx_layers(model: nn.Module):
    """Swap every quantized layer for one that traces to its ONNX pattern; put them back afterwards (also when
    a layer is refused half-way)."""
    swapped = {}
    try:
        for name, module in list(model.named_modules()):
            writer = next((write for kind, write in _WRITERS if isinstance(module, kind)), None)
            if writer is not None:
                replacement = writer(name, module)
                swapped[name] = module
                model.set_submodule(name, replacement)
            elif isinstance(module, (GGMLLinear, GGMLEmbedding)):
                raise ExportRefused(only_gguf(name, module, "ONNX"))
            elif (type(module).__module__.startswith("slimkit.") and not list(module.children())
                  and not isinstance(module, TORCH_LAYERS)):  # pruned, fused, Conv1D-as-Linear: torch's ops, traced
                raise ExportRefused(f"layer {name!r} is a slimkit {type(module).__name__}, which the ONNX export "
                                    "does not write; export a model whose quantized layers are QuantLinear, "
                                    "Int8Linear, Int8Conv2d or QuantEmbedding")
        dynamic = [n for n, m in swapped.items()
                   if isinstance(m, QuantLinear) and getattr(model.get_submodule(n), "op", None) is _DynamicInt8]
        if dynamic:
            warnings.warn(f"{len(dynamic)} weight-only int8 layers ({dynamic[0]}, ...) have an input width that "
                          "no MatMulNBits block size (16..256) divides, so they are written as onnxruntime's dynamic "
                          "int8 pattern, which also quantizes their inputs (per tensor, at run time): their outputs "
                          "differ from slimkit's by about 1/255 of each input's range", stacklevel=3)
        yield
    finally:
        for name, module in swapped.items():
            model.set_submodule(name, module)


class _OnnxLinear(nn.Module):
    """Computes the layer in float for tracing; ``symbolic`` writes the quantized nodes."""

    def __init__(self, op, weight: Tensor, bias: Tensor | None, input_scale: Tensor | None, constants: dict,
                 attributes: dict) -> None:
        super().__init__()
        self.op, self.weight, self.bias, self.input_scale = op, weight, bias, input_scale
        self.constants, self.attributes = constants, attributes

    def forward(self, x: Tensor) -> Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale
        y = self.op.apply(x, self.weight, self.constants, self.attributes)
        return y if self.bias is None else y + self.bias


class _MatMulNBits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, constants, attributes):
        return x @ weight.T

    @staticmethod
    def symbolic(g, x, weight, constants, attributes):
        inputs = [x] + [g.op("Constant", value_t=t) for t in constants.values()]
        out = g.op("com.microsoft::MatMulNBits", *inputs, **{f"{k}_i": v for k, v in attributes.items()})
        return _typed(out, x, attributes["N"])


class _DynamicInt8(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, constants, attributes):
        return x @ weight.T

    @staticmethod
    def symbolic(g, x, weight, constants, attributes):
        codes, x_scale, x_zero = g.op("DynamicQuantizeLinear", x, outputs=3)
        acc = g.op("MatMulInteger", codes, g.op("Constant", value_t=constants["weight"]), x_zero)
        scaled = g.op("Mul", g.op("Cast", acc, to_i=1), g.op("Constant", value_t=constants["scale"]))  # 1: FLOAT
        return g.op("Mul", scaled, x_scale)


NBITS_BLOCKS = (256, 128, 64, 32, 16)  # MatMulNBits' block sizes: powers of two from 16


def _nbits_or_int8(name: str, module: QuantLinear) -> _OnnxLinear:
    enc = module.encoded()
    out_features, in_features = enc.shape
    bias = None if module.bias is None else module.bias.detach()
    weight = module.dequantized_weight()
    block = _nbits_block(enc)
    if enc.fmt in ("int4", "int8") and block is not None:
        bits = INT_BITS[enc.fmt]
        blocks = in_features // block
        repeat = 1 if enc.granularity == "group" else blocks  # one channel scale repeated over its blocks
        codes = unpack(enc.codes, bits, enc.numel).reshape(out_features, blocks, block)
        constants = {"B": codes if bits == 8 else codes[..., 0::2] | (codes[..., 1::2] << 4),  # (N, K/g, g*bits/8)
                     "scales": enc.scales().float().repeat_interleave(repeat, 1).reshape(-1)}
        if not enc.symmetric:  # symmetric codes are q + 2^(bits-1), MatMulNBits' default zero point
            zero = enc.zero_point.repeat_interleave(repeat, 1)  # (N, K/g)
            if bits == 4:
                zero = torch.nn.functional.pad(zero, (0, blocks % 2))
                zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
            constants["zero_points"] = zero.reshape(-1)
        attributes = {"K": in_features, "N": out_features, "bits": bits, "block_size": block, "accuracy_level": 0}
        return _OnnxLinear(_MatMulNBits, weight, bias, module.input_scale, constants, attributes)
    if enc.fmt == "int8" and enc.granularity == "channel" and enc.symmetric:  # close, not exact: warned above
        codes, scale = weight_codes(enc)
        return _OnnxLinear(_DynamicInt8, weight, bias, module.input_scale,
                           {"weight": codes.T.contiguous(), "scale": scale}, {})
    raise ExportRefused(f"layer {name!r} ({enc.fmt}, {enc.granularity} {enc.group_size}) over {in_features} inputs "
                        "has no exact ONNX pattern; quantize to int4 or int8, per channel or in groups of 16..256 "
                        "(a power of two) that divide the input width (MatMulNBits)")


def _nbits_block(enc) -> int | None:
    """MatMulNBits' block size for ``enc``: its group, or for per-channel scales the largest block dividing K."""
    in_features = enc.shape[1]
    if enc.axis != 0 or len(enc.shape) != 2:
        return None
    if enc.granularity == "group":
        return enc.group_size if enc.group_size in NBITS_BLOCKS and in_features % enc.group_size == 0 else None
    if enc.granularity == "channel":
        return next((b for b in NBITS_BLOCKS if in_features % b == 0), None)
    return None


def _int8_from_int8_linear(name: str, module: Int8Linear) -> _OnnxLinear:
    if module.smooth is not None or module.outlier_index is not None or module.encoded().fmt != "int8":
        raise ExportRefused(f"layer {name!r} uses SmoothQuant, LLM.int8 outliers or sub-8-bit weights, which the "
                            "ONNX int8 pattern does not hold; quantize activations without them to export")
    codes, scale = weight_codes(module.encoded())
    bias = None if module.bias is None else module.bias.detach()
    constants = {"weight": codes.T.contiguous(), "scale": scale}
    if module.mode == "static":  # the calibrated scale: QDQ, the grid slimkit quantizes to
        constants["x_scale"] = module.act_scale.reshape(()).float()
        layer = _OnnxLinear(_StaticInt8, module.dequantized_weight(), bias, None, constants, {})
    else:
        layer = _OnnxLinear(_DynamicInt8, module.dequantized_weight(), bias, None, constants, {})
    return nn.Sequential(layer, nn.ReLU()) if module.relu else layer


class _StaticInt8(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, constants, attributes):  # the same grid values in float, for tracing
        scale = constants["x_scale"]
        return (torch.round(x / scale).clamp(-128, 127) * scale) @ weight.T

    @staticmethod
    def symbolic(g, x, weight, constants, attributes):
        x_scale, zero = g.op("Constant", value_t=constants["x_scale"]), g.op("Constant", value_t=torch.tensor(0, dtype=torch.int8))
        x_grid = g.op("DequantizeLinear", g.op("QuantizeLinear", x, x_scale, zero), x_scale, zero)
        w = g.op("DequantizeLinear", g.op("Constant", value_t=constants["weight"]),
                 g.op("Constant", value_t=constants["scale"]),
                 g.op("Constant", value_t=torch.zeros(len(constants["scale"]), dtype=torch.int8)), axis_i=1)
        return g.op("MatMul", x_grid, w)


class _GatherBlockQuantized(torch.autograd.Function):
    @staticmethod
    def forward(ctx, index, table, constants, attributes):
        return table[index]

    @staticmethod
    def symbolic(g, index, table, constants, attributes):
        inputs = [g.op("Constant", value_t=constants["data"]), index,
                  *[g.op("Constant", value_t=constants[key]) for key in ("scales", "zero_points") if key in constants]]
        out = g.op("com.microsoft::GatherBlockQuantized", *inputs, **{f"{k}_i": v for k, v in attributes.items()})
        return _typed(out, index, constants["scales"].shape[1] * attributes["block_size"], append=True,
                      dtype=constants["scales"].dtype)


def _typed(out, like, last: int, append: bool = False, dtype: torch.dtype | None = None):
    """``out`` with its type and shape set (``like``'s leading sizes and ``last``), which torch cannot infer
    for onnxruntime's contrib ops (it would warn that their shape inference is missing)."""
    sizes = like.type().varyingSizes()
    if sizes is None:
        return out
    shape = [*sizes, last] if append else [*sizes[:-1], last]
    kind = like.type() if dtype is None else like.type().with_dtype(dtype)
    out.setType(kind.with_sizes(shape))
    return out


class _OnnxOp(nn.Module):
    """Calls ``op`` (an autograd Function whose ``symbolic`` writes the ONNX nodes) on its input and ``arg``."""

    def __init__(self, op, arg, constants: dict, attributes: dict) -> None:
        super().__init__()
        self.op, self.arg, self.constants, self.attributes = op, arg, constants, attributes

    def forward(self, x: Tensor) -> Tensor:
        return self.op.apply(x, self.arg, self.constants, self.attributes)


def _gather_block_quantized(name: str, module: QuantEmbedding) -> _OnnxOp:
    """An int4/int8 table as ``com.microsoft::GatherBlockQuantized``: uint8 codes (two 4-bit codes a byte, low
    nibble first), one scale per block of the row, per-row scales repeated over the row's blocks."""
    enc = module.encoded()
    block = _nbits_block(enc)
    if enc.fmt not in ("int4", "int8") or block is None:
        raise ExportRefused(f"embedding {name!r} ({enc.fmt}, {enc.granularity} {enc.group_size}) has no exact ONNX "
                            "pattern; quantize embeddings to int4 or int8, per row or in groups of 16..256 (a power "
                            "of two) that divide the embedding width (GatherBlockQuantized)")
    bits, (rows, width) = INT_BITS[enc.fmt], enc.shape
    repeat = 1 if enc.granularity == "group" else width // block
    codes = unpack(enc.codes, bits, enc.numel).reshape(rows, width)
    constants = {"data": codes if bits == 8 else codes[:, 0::2] | (codes[:, 1::2] << 4),
                 "scales": enc.scales().float().repeat_interleave(repeat, 1).contiguous()}
    if not enc.symmetric:
        zero = enc.zero_point.repeat_interleave(repeat, 1)  # (rows, width / block)
        if bits == 4:
            zero = torch.nn.functional.pad(zero, (0, zero.shape[1] % 2))
            zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
        constants["zero_points"] = zero.contiguous()
    attributes = {"gather_axis": 0, "quantize_axis": 1, "block_size": block, "bits": bits}
    return _OnnxOp(_GatherBlockQuantized, module.weight.detach(), constants, attributes)


class _QDQConv(torch.autograd.Function):
    """Static int8 convolution as ONNX's QDQ form: the input through QuantizeLinear/DequantizeLinear (uint8,
    slimkit's calibrated scale and zero point), the int8 weight through a per-channel DequantizeLinear, then
    Conv (+ Relu); onnxruntime runs it as an int8 convolution or in float on the same grid values."""

    @staticmethod
    def forward(ctx, x, module, constants, attributes):  # the same grid values in float, for tracing
        scale, zero = constants["x_scale"], constants["x_zero"].float()
        x_q = (torch.round(x / scale) + zero).clamp(0, 255)
        w = constants["weight"].float() * constants["w_scale"][:, None, None, None]
        y = F.conv2d((x_q - zero) * scale, w, constants.get("bias"), module.stride, module.padding, module.dilation,
                     module.groups)
        return torch.relu(y) if attributes["relu"] else y

    @staticmethod
    def symbolic(g, x, module, constants, attributes):
        const = {key: g.op("Constant", value_t=value) for key, value in constants.items()}
        codes = g.op("QuantizeLinear", x, const["x_scale"], const["x_zero"])
        inputs = [g.op("DequantizeLinear", codes, const["x_scale"], const["x_zero"]),
                  g.op("DequantizeLinear", const["weight"], const["w_scale"], const["w_zero"], axis_i=0)]
        if "bias" in const:
            inputs.append(const["bias"])
        y = g.op("Conv", *inputs, **{f"{k}_i": v for k, v in attributes.items() if k != "relu"})
        return g.op("Relu", y) if attributes["relu"] else y


def _qdq_conv(name: str, module: Int8Conv2d) -> _OnnxOp:
    enc = module.encoded()
    if enc.fmt != "int8" or not all(isinstance(p, int) for p in module.padding):
        raise ExportRefused(f"layer {name!r} ({enc.fmt} weights, padding {module.padding}) has no ONNX int8 "
                            "convolution pattern here; quantize convolutions with int8 weights and numeric padding")
    codes, scale = weight_codes(enc)
    constants = {"x_scale": module.act_scale.reshape(()).float(),
                 "x_zero": module.act_zero_point.reshape(()).to(torch.uint8),
                 "weight": codes, "w_scale": scale.float(), "w_zero": torch.zeros(len(scale), dtype=torch.int8)}
    if module.bias is not None:
        constants["bias"] = module.bias.detach().float()
    attributes = {"kernel_shape": list(module.kernel_size), "strides": list(module.stride),
                  "pads": list(module.padding) * 2, "dilations": list(module.dilation), "group": module.groups,
                  "relu": int(module.relu)}
    return _OnnxOp(_QDQConv, module, constants, attributes)


_WRITERS = ((QuantLinear, _nbits_or_int8), (Int8Linear, _int8_from_int8_linear),
            (QuantEmbedding, _gather_block_quantized), (Int8Conv2d, _qdq_conv))  # layer type -> its ONNX pattern
