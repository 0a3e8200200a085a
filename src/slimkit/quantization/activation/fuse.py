"""Module fusion before quantization: Conv+BN(+ReLU) and Linear(+ReLU).

BatchNorm in eval mode is an affine map per channel, so it folds into the preceding conv:
W' = W * gamma / sqrt(var + eps), b' = beta + (b - mean) * gamma / sqrt(var + eps). A ReLU
module right after a Linear/conv (its only user) becomes a flag on that layer, so the int8
kernel applies it; a BatchNorm or ReLU module called more than once stays. Patterns are found
by tracing the model with torch.fx; a model that does not trace (e.g. Hugging Face models with data-dependent control flow) is left unfused, and
``fuse`` says why. The removed modules become ``Folded`` placeholders so that saved artifacts
still rebuild the same module tree.

>>> fused = fuse(cnn)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor, fx, nn

class Folded(nn.Identity):
    """Where a BatchNorm or ReLU was before it was fused into the preceding layer."""

    def slimkit_spec(self) -> dict:
        return {}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Folded:
        return cls()


class FusedLinear(nn.Linear):
    """A float Linear with an optional fused ReLU (the float twin of Int8Linear's ``relu``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, relu: bool = False) -> None:
        super().__init__(in_features, out_features, bias)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return torch.relu(y) if self.relu else y

    def slimkit_spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "relu": self.relu}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> FusedLinear:
        return cls(spec["in_features"], spec["out_features"], spec["bias"], spec["relu"])


class FusedConv2d(nn.Conv2d):
    """A float Conv2d with BatchNorm folded into its weight and bias and an optional fused ReLU."""

    def __init__(self, *args, relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return torch.relu(y) if self.relu else y

    def slimkit_spec(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.bias is not None,
                "padding_mode": self.padding_mode, "relu": self.relu}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> FusedConv2d:
        return cls(spec["in_channels"], spec["out_channels"], spec["kernel_size"], stride=spec["stride"],
                   padding=spec["padding"], dilation=spec["dilation"], groups=spec["groups"], bias=spec["bias"],
                   padding_mode=spec["padding_mode"], relu=spec["relu"])


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``conv`` followed by ``bn`` (eval mode: running statistics)."""
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight.detach() * factor.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight, bn.bias.detach() + (bias - bn.running_mean) * factor


def fusion_patterns(model: nn.Module) -> tuple[list[tuple[str, str | None, str | None]], list[str]]:
    """[(layer, batchnorm or None, relu module or None)] found by tracing; and notes on what was not fused.

    A BatchNorm or ReLU module that the forward calls more than once is left out: replacing it by an
    identity would delete its other calls too (torchvision's BasicBlock calls one ``self.relu`` after
    bn1 and again after the residual add).
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many kinds on untraceable code; any of them means "do not fuse"
        return [], [f"not fused: torch.fx cannot trace {type(model).__name__} ({type(exc).__name__})"]
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    patterns = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            continue
        bn, last = None, node
        follower = _only_user(last)
        if isinstance(modules[node.target], nn.Conv2d) and _called_once(follower, nn.BatchNorm2d, modules, calls):
            bn, last = follower.target, follower
            follower = _only_user(last)
        relu = follower.target if _called_once(follower, nn.ReLU, modules, calls) else None
        if bn or relu:
            patterns.append((node.target, bn, relu))
    notes = [f"{name}: not fused, called {n} times in forward" for name, n in calls.items()
             if n > 1 and isinstance(modules[name], (nn.BatchNorm2d, nn.ReLU))]
    return patterns, notes


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _called_once(node: fx.Node | None, kind: type, modules: dict[str, nn.Module], calls: Counter) -> bool:
    """Whether ``node`` calls a ``kind`` module that the forward calls nowhere else (so it can be folded away)."""
    return (node is not None and node.op == "call_module" and isinstance(modules[node.target], kind)
            and calls[node.target] == 1)


@torch.no_grad()
def fuse(model: nn.Module, *, fold_bn: bool = True) -> tuple[nn.Module, list[str]]:
    """Fuse Conv+BN(+ReLU) and Linear+ReLU in place (model in eval mode); returns the model and notes.

    With ``fold_bn=False`` only ReLUs are fused and BatchNorm stays (QAT folds it later).
    """
    patterns, notes = fusion_patterns(model)
    for layer_name, bn_name, relu_name in patterns:
        layer = model.get_submodule(layer_name)
        bn = model.get_submodule(bn_name) if bn_name and fold_bn else None
        if bn_name and not fold_bn and relu_name:
            relu_name = None  # the ReLU follows the BatchNorm, which stays: nothing to fuse into the conv
        model.set_submodule(layer_name, _fused_copy(layer, bn, relu_name is not None))
        for name in (bn_name if bn is not None else None, relu_name):
            if name:
                model.set_submodule(name, Folded())
        notes.append(f"{layer_name}: fused" + (f" + {bn_name}" if bn is not None else "")
                     + (f" + {relu_name}" if relu_name else ""))
    return model, notes


def _fused_copy(layer: nn.Module, bn: nn.BatchNorm2d | None, relu: bool) -> nn.Module:
    if isinstance(layer, nn.Linear):
        fused = FusedLinear(layer.in_features, layer.out_features, layer.bias is not None, relu)
        fused.load_state_dict(layer.state_dict())
        return fused
    weight, bias = fold_batchnorm(layer, bn) if bn is not None else (layer.weight, layer.bias)
    fused = FusedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                        bias=bias is not None, padding_mode=layer.padding_mode, relu=relu)
    fused.weight.copy_(weight)
    if bias is not None:
        fused.bias.copy_(bias)
    return fused
