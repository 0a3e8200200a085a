"""Which layers DP-SGD can train: per-sample safety checks and the GroupNorm replacement for BatchNorm.

DP-SGD bounds each example's influence by clipping its own gradient. A layer that mixes examples
in the forward pass (BatchNorm's batch statistics) gives example i a gradient that depends on
example j, and its running statistics are data released without noise: such models are refused.

>>> model = replace_batchnorm(slimkit.models.zoo.build("cnn"))  # doctest: +SKIP
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from slimkit.errors import UserInputError


def unsafe_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose output for one example depends on other examples of the batch."""
    return [name or type(model).__name__ for name, module in model.named_modules()
            if isinstance(module, _BatchNorm)
            or (isinstance(module, _InstanceNorm) and module.track_running_stats)]


def check_per_sample_safe(model: nn.Module) -> None:
    """Raise UserInputError naming the layers DP-SGD cannot train, with the replacement to use."""
    unsafe = unsafe_layers(model)
    if unsafe:
        shown = ", ".join(unsafe[:6]) + (f" and {len(unsafe) - 6} more" if len(unsafe) > 6 else "")
        raise UserInputError(
            f"DP-SGD needs per-sample gradients, but {len(unsafe)} layer(s) mix examples of a batch or keep "
            f"running statistics: {shown}; replace them with GroupNorm first: "
            f"model = slimkit.privacy.replace_batchnorm(model)")


class DPGroupNorm(nn.GroupNorm):
    """GroupNorm put in place of a BatchNorm; saved and rebuilt by ``slimkit.save`` / ``slimkit.load``."""

    def slimkit_spec(self) -> dict:
        return {"num_groups": self.num_groups, "num_channels": self.num_channels, "eps": self.eps,
                "affine": self.affine}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> DPGroupNorm:
        return cls(spec["num_groups"], spec["num_channels"], eps=spec["eps"], affine=spec["affine"])


def replace_batchnorm(model: nn.Module, max_groups: int = 32) -> nn.Module:
    """Swap every BatchNorm for a GroupNorm over the same channels (in place; returns ``model``).

    Each gets the largest group count <= ``max_groups`` that divides its channels, and the
    BatchNorm's affine weight and bias (running statistics have no GroupNorm counterpart: retrain).

    >>> model = replace_batchnorm(ResNet())  # doctest: +SKIP
    """
    for name, module in list(model.named_modules()):
        if not isinstance(module, _BatchNorm):
            continue
        channels = module.num_features
        groups = next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)
        norm = DPGroupNorm(groups, channels, eps=module.eps, affine=module.affine)
        if module.affine:
            norm.weight.data.copy_(module.weight.data)
            norm.bias.data.copy_(module.bias.data)
        tensors = [*module.parameters(), *module.buffers()]
        if tensors:
            norm.to(tensors[0].device)
        model.set_submodule(name, norm)
    return model
