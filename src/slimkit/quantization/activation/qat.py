"""Quantization-aware training: fake-quant modules trained with ``slimkit.train``, then converted.

``prepare_qat`` swaps every chosen Linear/Conv2d for a QATLinear/QATConv2d that computes with
fake-quantized weights (symmetric per output channel, ``weight_bits``) and fake-quantized inputs
(int8 per tensor: symmetric for Linear, uint8 with a zero point for conv, as the int8 modules
run them), using torch's fused fake-quant kernels. Rounding passes gradients straight through
(STE) inside the representable range and blocks them outside it; with ``lsq=True`` the scales are parameters learned as in LSQ (Esser et
al., 2020). ``QATSchedule`` (a training callback) freezes the observed ranges and folds
BatchNorm into the convs at the configured steps; ``convert`` gives the Int8 modules, which
compute what the fake-quant model simulated.

>>> prepare_qat(cnn, ActivationQuantConfig(mode="qat", weight_bits=4))  # doctest: +SKIP
>>> slimkit.train(cnn, batches, TrainConfig(steps=200), callbacks=[QATSchedule(config)])  # doctest: +SKIP
>>> convert(cnn)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.formats import quantize
from slimkit.manifest import add_entry
from slimkit.quantization.activation.config import ActivationQuantConfig
from slimkit.quantization.activation.fuse import Folded, fold_batchnorm, fuse, fusion_patterns
from slimkit.quantization.activation.modules import Int8Conv2d, Int8Linear
from slimkit.quantization.activation.observers import make_observer, range_qparams
from slimkit.selection import TIED_QUANTIZED, select_layers

_ATTR = "_slimkit_qat_preparation"


def fake_quant(x: Tensor, scale: Tensor, zero_point: Tensor | None, qmin: int, qmax: int) -> Tensor:
    """x rounded onto an int grid (one scale, or one per row of a weight), as float, in one fused op.

    torch's fused fake-quant kernels round exactly as ``slimkit.formats.fake_quantize`` (the tests
    check it bit for bit) and give the clipped straight-through gradient: 1 where x lies on the
    grid's range, 0 where it was clipped.
    """
    if scale.numel() == 1:
        zero = 0 if zero_point is None else int(zero_point)
        return torch.fake_quantize_per_tensor_affine(x, float(scale), zero, qmin, qmax)
    zeros = torch.zeros(scale.numel(), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1).float(), zeros, 0, qmin, qmax)


def lsq_quantize(x: Tensor, scale: Tensor, zero_point: Tensor | None, qmin: int, qmax: int) -> Tensor:
    """LSQ: x rounded onto the grid of a learnable ``scale``; gradient to scale scaled by 1/sqrt(N qmax)."""
    g = 1.0 / (x[0].numel() * qmax if scale.numel() > 1 else x.numel() * qmax) ** 0.5
    s = (scale - scale * g).detach() + scale * g
    v = x * (1.0 / s) + (0.0 if zero_point is None else zero_point)
    q = (v.round() - v).detach() + v  # round with a straight-through gradient
    q = q.clamp(qmin, qmax) - (0.0 if zero_point is None else zero_point)
    return q * s


class _QATBase(nn.Module):
    def _setup(self, layer: nn.Module, config: ActivationQuantConfig, symmetric_input: bool) -> None:
        self.weight = layer.weight  # the same Parameter: optimizers built after prepare_qat train it
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
        self.bias = nn.Parameter(bias.detach().clone())  # always present, so that BN folding has one to train
        self.relu = bool(getattr(layer, "relu", False))
        self.weight_bits, self.symmetric_input, self.lsq = config.weight_bits, symmetric_input, config.lsq
        self.observer = make_observer(config.observer, momentum=config.momentum)
        self.frozen = False
        qmax = 2 ** (self.weight_bits - 1) - 1
        w_scale = self.weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / qmax
        self.weight_scale = nn.Parameter(w_scale) if self.lsq else None
        self.input_scale = nn.Parameter(torch.zeros(())) if self.lsq else None
        self._zero_point = None  # LSQ keeps the zero point the first batch's observed range gave

    def input_qparams(self) -> tuple[Tensor, Tensor | None]:
        if self.lsq and self.input_scale.item() > 0:
            return self.input_scale, self._zero_point
        scale, zero = range_qparams(*self.observer.range(), symmetric=self.symmetric_input)
        return scale.reshape(()), None if zero is None else zero.reshape(())

    def fake_input(self, x: Tensor) -> Tensor:
        if self.training and not self.frozen:
            self.observer.observe(x)
        if self.lsq and self.input_scale.item() == 0:  # LSQ starts from the observed range of the first batch
            scale, self._zero_point = self.input_qparams()
            self.input_scale.data.copy_(scale)
        scale, zero = self.input_qparams()
        qmin, qmax = (-127, 127) if self.symmetric_input else (0, 255)
        if self.lsq:
            return lsq_quantize(x, self.input_scale, zero, qmin, qmax)
        return fake_quant(x, scale, zero, qmin, qmax)

    def fake_weight(self) -> Tensor:
        qmax = 2 ** (self.weight_bits - 1) - 1
        if self.lsq:
            shape = (-1,) + (1,) * (self.weight.dim() - 1)
            return lsq_quantize(self.weight, self.weight_scale.reshape(shape), None, -qmax, qmax)
        scale = self.weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / qmax
        return fake_quant(self.weight, scale, None, -qmax, qmax)

    def encoded_weight(self):
        scale = None if not self.lsq else self.weight_scale.detach().reshape(-1, 1)
        return quantize(self.weight.detach().float(), f"int{self.weight_bits}", granularity="channel", axis=0,
                        scale=scale)


class QATLinear(_QATBase):
    def __init__(self, layer: nn.Linear, config: ActivationQuantConfig) -> None:
        super().__init__()
        self._setup(layer, config, symmetric_input=True)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(self.fake_input(x), self.fake_weight(), self.bias)
        return torch.relu(y) if self.relu else y

    def to_int8(self) -> Int8Linear:
        return Int8Linear(self.encoded_weight(), self.bias, mode="static",
                          act_scale=self.input_qparams()[0].detach(), relu=self.relu)


class QATConv2d(_QATBase):
    def __init__(self, layer: nn.Conv2d, config: ActivationQuantConfig) -> None:
        super().__init__()
        self._setup(layer, config, symmetric_input=False)
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(self.fake_input(x), self.fake_weight(), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return torch.relu(y) if self.relu else y

    @torch.no_grad()
    def fold(self, bn: nn.BatchNorm2d) -> None:
        """Fold ``bn`` (running statistics) into this conv's weight and bias, in place (same Parameters)."""
        weight, bias = fold_batchnorm(self, bn)
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        if self.lsq:
            qmax = 2 ** (self.weight_bits - 1) - 1
            self.weight_scale.copy_(weight.abs().flatten(1).amax(1).clamp_min(1e-8) / qmax)

    def to_int8(self) -> Int8Conv2d:
        scale, zero = self.input_qparams()
        return Int8Conv2d(self.encoded_weight(), self.bias, act_scale=scale.detach(), act_zero_point=zero, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, groups=self.groups, relu=self.relu)


def prepare_qat(model: nn.Module, config: ActivationQuantConfig) -> nn.Module:
    """Swap Linear/Conv2d layers for fake-quant ones in place (BN folded now if ``fold_bn_step == 0``)."""
    if config.mode != "qat":
        raise UserInputError(f"prepare_qat needs ActivationQuantConfig(mode='qat'), got mode={config.mode!r}")
    if config.observer not in ("minmax", "moving_average"):
        raise UserInputError(f"QAT observes ranges with 'minmax' or 'moving_average' while training, not "
                             f"{config.observer!r}")
    model.eval()
    pending = [(c, bn, relu) for c, bn, relu in fusion_patterns(model)[0] if bn] if config.fuse else []
    if config.fuse:
        fuse(model, fold_bn=config.fold_bn_step == 0)
        if config.fold_bn_step == 0:
            pending = []
    chosen, skipped = select_layers(model, config.include, config.exclude, (nn.Linear, nn.Conv2d),
                                    action="to quantize", tied=TIED_QUANTIZED)
    for name, layer in chosen:
        model.set_submodule(name, (QATConv2d if isinstance(layer, nn.Conv2d) else QATLinear)(layer, config))
    object.__setattr__(model, _ATTR, {"config": config, "pending_bn": pending, "skipped": skipped})
    return model.train()


def fold_pending_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that QAT kept unfolded into its conv; returns the conv names folded."""
    preparation = _qat_preparation(model)
    folded = []
    for conv_name, bn_name, relu_name in preparation["pending_bn"]:
        conv = model.get_submodule(conv_name)
        if not isinstance(conv, QATConv2d):
            continue
        conv.fold(model.get_submodule(bn_name))
        model.set_submodule(bn_name, Folded())
        if relu_name:
            conv.relu = True
            model.set_submodule(relu_name, Folded())
        folded.append(conv_name)
    preparation["pending_bn"] = []
    return folded


def freeze_observers(model: nn.Module) -> None:
    """Keep every QAT layer's activation range as it is now."""
    for module in model.modules():
        if isinstance(module, _QATBase):
            module.frozen = True


class QATSchedule:
    """Training callback: freeze observers after ``freeze_observers_step`` steps, fold BN after ``fold_bn_step``."""

    def __init__(self, config: ActivationQuantConfig) -> None:
        self.config = config

    def on_step_end(self, state) -> None:
        if state.step == self.config.freeze_observers_step:
            freeze_observers(state.model)
        if self.config.fold_bn_step and state.step == self.config.fold_bn_step:
            fold_pending_batchnorm(state.model)


def is_qat(model: nn.Module) -> bool:
    return getattr(model, _ATTR, None) is not None


@torch.no_grad()
def convert_qat(model: nn.Module) -> nn.Module:
    """Replace every QAT layer by the Int8 module that computes what it simulated; in place."""
    preparation = _qat_preparation(model)
    config = preparation["config"]
    model.eval()
    fold_pending_batchnorm(model)
    technique = "activation int8 qat" + (" (lsq)" if config.lsq else "")
    for name, module in list(model.named_modules()):
        if isinstance(module, _QATBase):
            model.set_submodule(name, module.to_int8())
            add_entry(model, {"layer": name, "technique": technique, "format": f"w{config.weight_bits}a8",
                              "relu_fused": module.relu})
    for name, reason in preparation["skipped"].items():
        add_entry(model, {"layer": name, "technique": technique, "skipped": reason})
    object.__delattr__(model, _ATTR)
    return model


def _qat_preparation(model: nn.Module) -> dict:
    preparation = getattr(model, _ATTR, None)
    if preparation is None:
        raise UserInputError("convert before prepare_qat: call prepare_qat(model, ActivationQuantConfig(mode='qat')) "
                             "and train first")
    return preparation
