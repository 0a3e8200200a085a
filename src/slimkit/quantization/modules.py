"""QuantLinear: a Linear whose weight is stored as packed codes and scales.

The codes are real (an int4 weight takes half a byte per value on disk and in memory). The
forward pass has two execution paths, chosen per layer and recorded in the manifest:
"dequant" rebuilds the float weight on every call (least memory), "cached" keeps a float copy
(float speed, float memory). ``slimkit.quantization.paths.choose_paths`` measures which to use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.formats import EncodedTensor

PATHS = ("dequant", "cached")


class QuantLinear(nn.Module):
    """y = x W^T + b with W = dequantize(codes, scales) / input_scale (input_scale from AWQ, else 1)."""

    def __init__(self, in_features: int, out_features: int, encoded: EncodedTensor, bias: Tensor | None = None,
                 input_scale: Tensor | None = None) -> None:
        super().__init__()
        if tuple(encoded.shape) != (out_features, in_features):
            raise ValueError(f"encoded weight of shape {tuple(encoded.shape)} does not fit a "
                             f"({out_features}, {in_features}) Linear")
        self.in_features, self.out_features = in_features, out_features
        self._meta = encoded.meta()
        self._names = sorted(encoded.tensors())
        for name, tensor in encoded.tensors().items():
            self.register_buffer(f"w_{name}", tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float())
        self.path = "dequant"
        self._cached: Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, encoded: EncodedTensor, input_scale: Tensor | None = None) -> QuantLinear:
        return cls(linear.in_features, linear.out_features, encoded, linear.bias, input_scale)

    def encoded(self) -> EncodedTensor:
        return EncodedTensor.from_parts(self._meta, {n: getattr(self, f"w_{n}") for n in self._names})

    def dequantized_weight(self) -> Tensor:
        """The float32 weight (out, in) this layer computes with."""
        weight = self.encoded().dequantize()
        return weight if self.input_scale is None else weight / self.input_scale

    def set_path(self, path: str) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
        self.path = path
        self._cached = self.dequantized_weight() if path == "cached" else None

    def forward(self, x: Tensor) -> Tensor:
        weight = self._cached if self._cached is not None else self.dequantized_weight()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight.to(x.dtype), bias)

    def encoded_weight_counts(self) -> tuple[int, int]:
        """(values, nonzero values) of the weight held as codes, for parameter counts in reports."""
        return self.out_features * self.in_features, int(self.encoded().dequantize().count_nonzero())

    def stored_bytes(self) -> int:
        """Bytes of the codes, scales and extras (the memory the weight takes when not cached)."""
        extra = 0 if self.input_scale is None else self.input_scale.numel() * 4
        return self.encoded().nbytes() + extra

    def slimkit_spec(self) -> dict:
        tensors = {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                   for n, t in self.encoded().tensors().items()}
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "input_scale": self.input_scale is not None, "meta": self._meta, "tensors": tensors,
                "path": self.path}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> QuantLinear:
        """An empty layer of the right shapes; ``load_state_dict`` fills it."""
        tensors = {n: torch.zeros(t["shape"], dtype=getattr(torch, t["dtype"])) for n, t in spec["tensors"].items()}
        module = cls(spec["in_features"], spec["out_features"], EncodedTensor.from_parts(spec["meta"], tensors),
                     torch.zeros(spec["out_features"]) if spec["bias"] else None,
                     torch.ones(spec["in_features"]) if spec["input_scale"] else None)
        module.path = spec["path"]  # a cached float copy is rebuilt once the weights have loaded:
        module.register_load_state_dict_post_hook(lambda m, _: m.set_path(m.path))
        return module

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self._meta.get('fmt')}, group_size={self._meta.get('group_size')}, path={self.path}")
