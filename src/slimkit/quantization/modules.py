"""QuantLinear: a Linear whose weight is stored as packed codes and scales.

The codes are real (an int4 weight takes half a byte per value on disk and in memory). The
forward pass has several execution paths, chosen per layer and per range of batch rows and
recorded in the manifest: "dequant" rebuilds the float weight on every call (least memory),
"cached" keeps a float copy (float speed, float memory), "bf16" a bfloat16 copy (CPUs with native
bf16 arithmetic), "int4pack"/"int8pack" call torch's weight-only kernels on CPU and
"gemv_int4"/"gemv_int8" slimkit's Triton kernels on CUDA (see kernels.py).
``slimkit.quantization.paths.choose_paths`` measures which is fastest for each layer; the default is
"dequant" for every batch size.

One copy of the weight: while a CPU kernel path keeps its own layout of the codes, the stored codes
are dropped (``w_codes`` is None) and read back from that layout, exactly, whenever they are needed:
``state_dict``, saving, ``encoded()``, a device move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.formats import EncodedTensor, unpack
from slimkit.quantization import cpu, kernels, stored

PATHS = ("dequant", "cached", "bf16", *kernels.KERNELS)
COPIES = ("float_cache", "bf16_cache", "kernel_weight", "kernel_scale")  # what paths build; never saved


class QuantLinear(nn.Module):
    """y = x W^T + b with W = dequantize(codes, scales) / input_scale (input_scale from AWQ, else 1)."""

    def __init__(self, in_features: int, out_features: int, encoded: EncodedTensor, bias: Tensor | None = None,
                 input_scale: Tensor | None = None) -> None:
        super().__init__()
        if tuple(encoded.shape) != (out_features, in_features):
            raise ValueError(f"encoded weight of shape {tuple(encoded.shape)} does not fit a "
                             f"({out_features}, {in_features}) Linear")
        self.in_features, self.out_features = in_features, out_features
        stored.store(self, encoded)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float())
        self.paths: list[tuple[int | None, str]] = [(None, "dequant")]  # (up to this many rows, path)
        # Caches the chosen paths need: non-persistent buffers, so that memory reports count them
        # and artifacts do not store them (they are rebuilt from the codes on load).
        for name in COPIES:
            self.register_buffer(name, None, persistent=False)
        self._int4_block: int | None = None  # see kernels.int4pack_block
        self.measured_on: dict | None = None  # cpu.signature() of the machine choose_paths measured on
        stored.codes_replaceable(self)
        self.register_load_state_dict_post_hook(_rebuild_caches)  # the caches must follow loaded codes

    @classmethod
    def from_linear(cls, linear: nn.Linear, encoded: EncodedTensor, input_scale: Tensor | None = None) -> QuantLinear:
        return cls(linear.in_features, linear.out_features, encoded, linear.bias, input_scale)

    def encoded(self) -> EncodedTensor:
        return stored.stored(self)

    def recovered_codes(self) -> Tensor:
        """The stored codes read back from the kernel layout that replaced them (see the module docstring)."""
        return kernels.stored_codes(self._own_kernel(), self.kernel_weight, self.in_features, self._int4_block)

    def _own_kernel(self) -> str | None:
        return next((path for _, path in self.paths if path in kernels.OWN_LAYOUT), None)

    def _restore_codes(self) -> None:
        """Put the stored codes back in place of the kernel layout (before it is rebuilt, moved or loaded into)."""
        if self.w_codes is None:
            self.w_codes = self.recovered_codes()
            self.kernel_weight = self.kernel_scale = None

    def weight_device(self) -> torch.device:
        return (self.w_codes if self.w_codes is not None else self.kernel_weight).device

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight (out, in) this layer computes with, in ``dtype`` (one kernel pass on CUDA where one fits)."""
        encoded = self.encoded()
        weight = kernels.dequantize(encoded, dtype)
        if weight is None:
            weight = encoded.dequantize()
        weight = weight if self.input_scale is None else weight / self.input_scale
        return weight.to(dtype)

    def available_paths(self) -> list[str]:
        """The paths this layer can run: always dequant and cached, plus a kernel if one fits, plus bf16 on
        a CPU with native bf16 arithmetic (elsewhere it is emulated: slower than float32)."""
        kernel = kernels.kernel_for(self._encoded_meta, self.weight_device())
        bf16 = self.weight_device().type == "cpu" and not cpu.missing_bf16()
        return ["dequant", "cached"] + (["bf16"] if bf16 else []) + ([kernel] if kernel else [])

    def set_paths(self, paths: list[tuple[int | None, str]], *, fallback: bool = False) -> None:
        """Use ``paths[i][1]`` for inputs of at most ``paths[i][0]`` rows; the last limit is None (any).

        ``fallback=True`` replaces a path this layer cannot run here (a CUDA kernel on the CPU, say:
        after a device move or when loading) with "dequant" instead of raising.
        """
        if not paths or paths[-1][0] is not None:
            raise ValueError("the last path must cover any number of rows: (None, path)")
        if fallback:
            available = self.available_paths()
            paths = [(rows, path if path in available else "dequant") for rows, path in paths]
        available = self.available_paths()
        for _, path in paths:
            if path not in available:
                raise ValueError(f"path {path!r} cannot run this {self._encoded_meta['fmt']} layer; "
                                 f"available: {', '.join(available)}")
        self._restore_codes()
        self.paths = [(rows, path) for rows, path in paths]
        used = {path for _, path in self.paths}
        self.float_cache = self.dequantized_weight() if "cached" in used else None
        self.bf16_cache = self.dequantized_weight(torch.bfloat16) if "bf16" in used else None
        kernel = next((p for p in used if p in kernels.KERNELS), None)
        encoded = self.encoded()
        self.kernel_weight, self.kernel_scale = kernels.prepare(encoded, kernel) if kernel else (None, None)
        if kernel in kernels.OWN_LAYOUT:  # the layout holds the codes: drop the stored copy
            self._int4_block = None
            if kernel == "int4pack":
                unpacked = unpack(encoded.codes, 4, encoded.numel).reshape(encoded.shape)
                self._int4_block = kernels.int4pack_block(self.kernel_weight, unpacked)
            self.w_codes = None

    def resident_bytes(self) -> int:
        """Bytes this layer holds now: stored tensors that are kept, plus every copy its paths built."""
        return sum(t.nbytes for t in (*self.parameters(recurse=False), *self.buffers(recurse=False)))

    def set_path(self, path: str) -> None:
        """One path for every batch size."""
        self.set_paths([(None, path)])

    def _apply(self, fn, recurse=True):
        """After a device move, rebuild the caches there; a kernel path the new device lacks becomes dequant."""
        self._restore_codes()
        super()._apply(fn, recurse)
        self.set_paths(self.paths, fallback=True)
        return self

    def path_for(self, rows: int) -> str:
        return next(path for limit, path in self.paths if limit is None or rows <= limit)

    def forward(self, x: Tensor) -> Tensor:
        path = self.paths[0][1] if len(self.paths) == 1 else self.path_for(x.numel() // self.in_features)
        if path == "cached" and x.dtype == torch.float32:  # the hot path: as little Python as nn.Linear
            return F.linear(x, self.float_cache, self.bias)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if path == "bf16":  # bf16 products, float32 accumulation inside oneDNN's GEMM
            y = F.linear(x.to(torch.bfloat16), self.bf16_cache).to(x.dtype)
            return y if bias is None else y + bias
        if path in kernels.KERNELS:
            rows = x.reshape(-1, self.in_features)
            if self.input_scale is not None:
                rows = rows / self.input_scale
            y = kernels.run(path, self.kernel_weight, self.kernel_scale, self._encoded_meta["group_size"], rows)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y if bias is None else y + bias
        weight = self.float_cache if path == "cached" else self.dequantized_weight()
        return F.linear(x, weight.to(x.dtype), bias)

    def encoded_weight_counts(self) -> tuple[int, int]:
        return stored.value_counts(self)

    def slimkit_spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "input_scale": self.input_scale is not None, "paths": [list(p) for p in self.paths],
                "measured_on": self.measured_on, **stored.describe(self)}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> QuantLinear:
        """An empty layer of the right shapes; ``load_state_dict`` fills it."""
        module = cls(spec["in_features"], spec["out_features"], stored.empty(spec),
                     torch.zeros(spec["out_features"]) if spec["bias"] else None,
                     torch.ones(spec["in_features"]) if spec["input_scale"] else None)
        module.paths = [tuple(p) for p in spec["paths"]]  # their caches are built once the weights have loaded
        module.measured_on = spec.get("measured_on")
        if cpu.measured_elsewhere(module.measured_on):
            module.paths, module.measured_on = [(None, "dequant")], None
        return module

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self._encoded_meta['fmt']}, group_size={self._encoded_meta['group_size']}, "
                f"paths={self.paths}")


def _rebuild_caches(module: QuantLinear, _incompatible_keys) -> None:
    module.set_paths(module.paths, fallback=True)
