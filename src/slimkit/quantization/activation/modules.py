"""Int8Linear and Int8Conv2d: real int8 inference modules (int8 activations x int{2..8} weights).

Weights are symmetric per output channel, stored as slimkit encoded codes (an int4 weight takes
half a byte) and expanded once into the kernel's int8 layout (a non-persistent buffer rebuilt on
load). Int8Linear multiplies with ``torch._int_mm`` (activations symmetric int8, one scale per
token at run time, or one calibrated scale per tensor); Int8Conv2d calls oneDNN's int8
convolution (activations uint8 with a calibrated scale and zero point, ReLU fused in the kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.formats import EncodedTensor, quantize, unpack
from slimkit.quantization import stored
from slimkit.quantization.activation import kernels


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
        self._prepare()

    def _prepare(self) -> None:
        codes, scale = weight_codes(self.encoded())
        self.kernel_weight, self.weight_scale = codes.t(), scale  # (in, out) view: _int_mm's fast layout

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (tokens, in)
        inliers = rows if self.outlier_index is None else rows.index_fill(1, self.outlier_index, 0.0)
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
        outliers = self.outlier_index is not None
        y = kernels.rescale(acc, row_scale, self.weight_scale, self.bias, self.relu and not outliers)
        if outliers:
            y = y + rows[:, self.outlier_index] @ self.outlier_weight.T
            y = torch.relu(y) if self.relu else y
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def slimkit_spec(self) -> dict:
        return {"mode": self.mode, "granularity": self.granularity, "relu": self.relu, "bias": self.bias is not None,
                "smooth": self.smooth is not None,
                "outliers": None if self.outlier_index is None else self.outlier_index.numel(),
                **stored.describe(self)}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Int8Linear:
        enc = stored.empty(spec)
        out_features, in_features = enc.shape
        n = spec["outliers"]
        return cls(enc, torch.zeros(out_features) if spec["bias"] else None, mode=spec["mode"],
                   granularity=spec["granularity"], relu=spec["relu"],
                   act_scale=torch.ones(()) if spec["mode"] == "static" else None,
                   smooth=torch.ones(in_features) if spec["smooth"] else None,
                   outlier_index=None if n is None else torch.zeros(n, dtype=torch.long),
                   outlier_weight=None if n is None else torch.zeros(out_features, n))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weights={self._encoded_meta['fmt']}, "
                f"mode={self.mode}, relu={self.relu}")


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
