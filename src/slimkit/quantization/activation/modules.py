"""Int8Linear and Int8Conv2d: real int8 inference modules (int8 activations x int{2..8} weights).

Weights are symmetric per output channel, stored as slimkit encoded codes (an int4 weight takes
half a byte) and expanded once into the kernel's int8 layout (a non-persistent buffer rebuilt on
load). Int8Linear keeps one copy: its kernel layout replaces the stored codes, which are read back
from it exactly for ``state_dict``, saving and ``encoded()`` (see ``stored.codes_replaceable``). Int8Linear multiplies with ``torch._int_mm`` (path "int_mm": activations symmetric int8, one
scale per token at run time, or one calibrated scale per tensor) or, dynamic layers only, with torch's
x86 quantized linear (path "x86": fbgemm's int8 GEMM with the activation quantization, per tensor
uint8 with a zero point, and the rescale in one call; ``paths.choose_paths`` measures which is faster
per layer and row count); Int8Conv2d calls oneDNN's int8 convolution (activations uint8 with a
calibrated scale and zero point, ReLU fused in the kernel).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.formats import EncodedTensor, pack, quantize, unpack
from slimkit.quantization import cpu, stored
from slimkit.quantization.activation import kernels

INT8_PATHS = ("int_mm", "x86")


def encode_weight(weight: Tensor, bits: int) -> EncodedTensor:
    """Symmetric per-output-channel int{bits} codes of a Linear or conv weight."""
    return quantize(weight.detach().float(), f"int{bits}", granularity="channel", axis=0)


def weight_codes(enc: EncodedTensor) -> tuple[Tensor, Tensor]:
    """Signed int8 values (the weight's shape) and float32 scales (out,) of a symmetric encoding."""
    bits = int(enc.fmt.removeprefix("int"))
    codes = unpack(enc.codes, bits, enc.numel).reshape(enc.shape).to(torch.int16) - 2 ** (bits - 1)
    return codes.to(torch.int8), enc.scales().float().reshape(-1)


class _Int8Base(nn.Module):
    def _store(self, encoded: EncodedTensor, bias: Tensor | None) -> None:
        stored.store(self, encoded)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        for name in ("kernel_weight", "weight_scale"):
            self.register_buffer(name, None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module._prepare())

    def encoded(self) -> EncodedTensor:
        return stored.stored(self)

    def dequantized_weight(self) -> Tensor:
        return self.encoded().dequantize()

    def encoded_weight_counts(self) -> tuple[int, int]:
        return stored.value_counts(self)

    def resident_bytes(self) -> int:
        """Bytes held: stored tensors and kernel layouts (the x86 packed weight: as many as its int8 codes)."""
        held = sum(t.nbytes for t in (*self.parameters(recurse=False), *self.buffers(recurse=False)))
        return held + (self.out_features * self.in_features if getattr(self, "_x86", None) is not None else 0)

    def weight_device(self) -> torch.device:
        return self.weight_scale.device


def x86_missing() -> str | None:
    """None when torch's x86 int8 linear can run exactly here, else why the "x86" path is not offered."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return "torch was built without fbgemm (x86 quantized linear)"
    if not {"avx512_vnni", "avx_vnni"} & set(cpu.flags()):
        # without VNNI fbgemm's u8 x s8 pairs saturate int16 unless the activations lose a bit (reduce_range)
        return "no VNNI on this CPU (avx512_vnni/avx_vnni flags absent): full-range uint8 activations could saturate"
    return None


class Int8Linear(_Int8Base):
    """y = rescale(int8(x * smooth) @ int8(W)^T) + bias, plus float ``x[:, outliers] @ W[:, outliers]^T``.

    mode "dynamic": activation scales per token (``granularity="token"``) or per tensor, computed
    on every call; "static": the calibrated ``act_scale``. ``smooth`` (SmoothQuant) multiplies the
    input, the weight having been divided by it before encoding. ``outlier_index`` (LLM.int8)
    lists input columns computed in float with ``outlier_weight``.
    """

    def __init__(self, encoded: EncodedTensor, bias: Tensor | None = None, *, mode: str = "dynamic",
                 granularity: str = "token", act_scale: Tensor | None = None, smooth: Tensor | None = None,
                 outlier_index: Tensor | None = None, outlier_weight: Tensor | None = None,
                 relu: bool = False) -> None:
        super().__init__()
        self.out_features, self.in_features = encoded.shape
        self.mode, self.granularity, self.relu = mode, granularity, relu
        if mode == "static" and act_scale is None:
            raise ValueError("a static Int8Linear needs act_scale")
        self._store(encoded, bias)
        self.register_buffer("act_scale", None if act_scale is None else act_scale.float().reshape(()))
        self.register_buffer("smooth", None if smooth is None else smooth.float())
        self.register_buffer("outlier_index", outlier_index)
        self.register_buffer("outlier_weight", outlier_weight)
        self.paths: list[tuple[int | None, str]] = [(None, "int_mm")]  # (up to this many rows, path)
        self.measured_on: dict | None = None  # see QuantLinear.measured_on
        stored.codes_replaceable(self)
        self._x86 = None
        self._prepare()

    def _prepare(self) -> None:
        self._restore_codes()
        codes, scale = weight_codes(self.encoded())
        self.weight_scale = scale
        used = {path for _, path in self.paths}
        self.kernel_weight = codes.t() if "int_mm" in used else None  # (in, out) view: _int_mm's fast layout
        # fbgemm's packed weight is opaque (no storage): a plain attribute, like Int8Conv2d's
        self._x86 = _x86_pack(codes, scale, self.bias) if "x86" in used else None
        self.w_codes = None  # one copy: the kernel layout holds the codes

    def recovered_codes(self) -> Tensor:
        """The stored codes read back from the kernel layout that replaced them."""
        if self.kernel_weight is not None:
            signed = self.kernel_weight.t()
        else:
            signed = torch.ops.quantized.linear_unpack(self._x86)[0].int_repr()
        bits = int(self._encoded_meta["fmt"].removeprefix("int"))
        return pack((signed.to(torch.int16) + 2 ** (bits - 1)).to(torch.uint8).reshape(-1), bits)

    def _restore_codes(self) -> None:
        if self.w_codes is None:
            self.w_codes = self.recovered_codes()

    def _apply(self, fn, recurse=True):
        """Moves and casts carry the codes; the kernel layouts are rebuilt where the layer lands."""
        self._restore_codes()
        super()._apply(fn, recurse)
        self.set_paths(self.paths, fallback=True)
        return self

    def __getstate__(self) -> dict:
        """The packed x86 weight cannot be copied: a copy gets the codes and rebuilds its layouts."""
        state = {**super().__getstate__(), "_x86": None}
        if self.w_codes is None:
            state["_buffers"] = {**state["_buffers"], "w_codes": self.recovered_codes()}
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "x86" in {path for _, path in self.paths}:
            self._prepare()

    def available_paths(self) -> list[str]:
        """int_mm always; x86 for a dynamic layer where the CPU runs it exactly (see ``x86_missing``)."""
        x86 = self.mode == "dynamic" and self.weight_device().type == "cpu" and x86_missing() is None
        return ["int_mm"] + (["x86"] if x86 else [])

    def set_paths(self, paths: list[tuple[int | None, str]], *, fallback: bool = False) -> None:
        """As ``QuantLinear.set_paths``; a path this layer cannot run becomes int_mm with ``fallback``."""
        if not paths or paths[-1][0] is not None:
            raise ValueError("the last path must cover any number of rows: (None, path)")
        available = self.available_paths()
        if fallback:
            paths = [(rows, path if path in available else "int_mm") for rows, path in paths]
        for _, path in paths:
            if path not in available:
                raise ValueError(f"path {path!r} cannot run this Int8Linear; available: {', '.join(available)}")
        self.paths = [(rows, path) for rows, path in paths]
        self._prepare()

    def set_path(self, path: str) -> None:
        self.set_paths([(None, path)])

    def effective_weight(self) -> Tensor:
        """The float weight this layer's product approximates (SmoothQuant's factor folded back in)."""
        weight = self.encoded().dequantize()
        return weight if self.smooth is None else weight * self.smooth

    def _x86_forward(self, inliers: Tensor) -> Tensor:
        smoothed = inliers if self.smooth is None else inliers * self.smooth
        return torch.ops.quantized.linear_dynamic(smoothed, self._x86, False)  # False: full uint8 range (VNNI)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (tokens, in)
        inliers = rows if self.outlier_index is None else rows.index_fill(1, self.outlier_index, 0.0)
        outliers = self.outlier_index is not None
        path = self.paths[0][1] if len(self.paths) == 1 else _path_at(self.paths, rows.shape[0])
        if path == "x86":
            y = self._x86_forward(inliers)
            y = torch.relu(y) if self.relu and not outliers else y
        else:
            y = self._int_mm_forward(inliers, outliers)
        if outliers:
            y = y + rows[:, self.outlier_index] @ self.outlier_weight.T
            y = torch.relu(y) if self.relu else y
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _int_mm_forward(self, inliers: Tensor, outliers: bool) -> Tensor:
        if self.mode == "static":
            row_scale = self.act_scale
            codes = kernels.quantize_static(inliers, row_scale, self.smooth)
        elif self.granularity == "token":
            codes, row_scale = kernels.quantize_tokens(inliers, self.smooth)
        else:
            smoothed = inliers if self.smooth is None else inliers * self.smooth
            row_scale = smoothed.abs().amax().clamp_min(1e-12) / kernels.QMAX
            codes = kernels.quantize_static(smoothed, row_scale)
        acc = kernels.int8_matmul(codes, self.kernel_weight)  # (tokens, out) int32
        return kernels.rescale(acc, row_scale, self.weight_scale, self.bias, self.relu and not outliers)

    def slimkit_spec(self) -> dict:
        return {"mode": self.mode, "granularity": self.granularity, "relu": self.relu, "bias": self.bias is not None,
                "smooth": self.smooth is not None,
                "outliers": None if self.outlier_index is None else self.outlier_index.numel(),
                "paths": [list(p) for p in self.paths], "measured_on": self.measured_on, **stored.describe(self)}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Int8Linear:
        enc = stored.empty(spec)
        out_features, in_features = enc.shape
        n = spec["outliers"]
        module = cls(enc, torch.zeros(out_features) if spec["bias"] else None, mode=spec["mode"],
                     granularity=spec["granularity"], relu=spec["relu"],
                     act_scale=torch.ones(()) if spec["mode"] == "static" else None,
                     smooth=torch.ones(in_features) if spec["smooth"] else None,
                     outlier_index=None if n is None else torch.zeros(n, dtype=torch.long),
                     outlier_weight=None if n is None else torch.zeros(out_features, n))
        module.paths = [tuple(p) for p in spec.get("paths", [[None, "int_mm"]])]  # built once the weights load
        module.measured_on = spec.get("measured_on")
        if cpu.measured_elsewhere(module.measured_on):
            module.paths, module.measured_on = [(None, "int_mm")], None
        return module

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weights={self._encoded_meta['fmt']}, "
                f"mode={self.mode}, relu={self.relu}")


def _x86_pack(codes: Tensor, scale: Tensor, bias: Tensor | None):
    """fbgemm's packed int8 weight (per-channel scales, zero points 0) with the bias it adds."""
    with warnings.catch_warnings():  # torch deprecates quantized tensors; this op still takes one
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        weight = torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"  # the packing follows the engine; the op follows the packing
    try:
        return torch.ops.quantized.linear_prepack(weight, bias)
    finally:
        torch.backends.quantized.engine = engine


def _path_at(paths, rows: int) -> str:
    return next(path for limit, path in paths if limit is None or rows <= limit)


def onednn_conv_missing() -> str | None:
    """None when oneDNN's int8 convolution is in this torch build, else the reason Int8Conv2d falls back."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise")):
        return "oneDNN int8 convolution unavailable in this torch build; computing the same integers in float"
    return None


class Int8Conv2d(_Int8Base):
    """Static int8 convolution: uint8 input (calibrated ``act_scale``, ``act_zero_point``), int weights, float out."""

    def __init__(self, encoded: EncodedTensor, bias: Tensor | None, *, act_scale: Tensor, act_zero_point: Tensor,
                 stride, padding, dilation, groups: int, relu: bool = False) -> None:
        super().__init__()
        self.out_channels, in_per_group, *self.kernel_size = encoded.shape
        self.in_channels = in_per_group * groups
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups, self.relu = groups, relu
        self._store(encoded, bias)
        self.register_buffer("act_scale", act_scale.float().reshape(()))
        self.register_buffer("act_zero_point", act_zero_point.float().reshape(()))
        self._prepare()

    def _prepare(self) -> None:
        codes, scale = weight_codes(self.encoded())
        self.weight_scale = scale
        self.kernel_weight = codes
        # oneDNN's packed weight is an opaque tensor without storage: a plain attribute, not a buffer,
        # so that state_dict, .to() and memory reports skip it (they count kernel_weight instead);
        # packed on the first call and dropped by copies (deepcopy cannot copy it)
        self._packed = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_packed": None}

    def forward(self, x: Tensor) -> Tensor:
        scale, zero = float(self.act_scale), int(self.act_zero_point)
        if x.dim() == 4:  # oneDNN's int8 convolution runs channels-last (and answers so): NCHW is reordered per call
            x = x.contiguous(memory_format=torch.channels_last)
        codes = kernels.quantize_unsigned(x, scale, zero)
        if self._packed is None and not onednn_conv_missing():
            self._packed = torch.ops.onednn.qconv_prepack(self.kernel_weight, self.weight_scale, scale, zero,
                                                          self.stride, self.padding, self.dilation, self.groups)
        if self._packed is None:
            w = self.kernel_weight.float() * self.weight_scale[:, None, None, None]
            y = F.conv2d((codes.float() - zero) * scale, w, self.bias, self.stride, self.padding, self.dilation,
                         self.groups)
            return torch.relu(y) if self.relu else y
        return torch.ops.onednn.qconv2d_pointwise(
            codes, scale, zero, self._packed, self.weight_scale, self._zero_points(), self.bias, self.stride,
            self.padding, self.dilation, self.groups, 1.0, 0, torch.float32, "relu" if self.relu else "none", [], "")

    def _zero_points(self) -> Tensor:
        return torch.zeros(self.out_channels, dtype=torch.long)

    def slimkit_spec(self) -> dict:
        return {"bias": self.bias is not None, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "groups": self.groups, "relu": self.relu, **stored.describe(self)}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Int8Conv2d:
        enc = stored.empty(spec)
        return cls(enc, torch.zeros(enc.shape[0]) if spec["bias"] else None, act_scale=torch.ones(()),
                   act_zero_point=torch.zeros(()), stride=spec["stride"], padding=spec["padding"],
                   dilation=spec["dilation"], groups=spec["groups"], relu=spec["relu"])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, weights={self._encoded_meta['fmt']}, relu={self.relu}")
