"""An EncodedTensor kept inside a module as buffers ``w_<field>``, and its description for io.

QuantLinear and QuantEmbedding both hold their weight this way: ``store`` registers the encoded
tensors (so they are saved, moved and counted like any buffer), ``stored`` reads them back,
``describe``/``empty`` give ``slimkit_spec``/``from_slimkit_spec`` the shapes to rebuild from.
"""

from __future__ import annotations

import torch
from torch import nn

from slimkit.formats import EncodedTensor


def store(module: nn.Module, encoded: EncodedTensor) -> None:
    module._encoded_meta = encoded.meta()
    module._encoded_names = sorted(encoded.tensors())
    for name, tensor in encoded.tensors().items():
        module.register_buffer(f"w_{name}", tensor)


def stored(module: nn.Module) -> EncodedTensor:
    """The module's weight; codes a kernel layout replaced (``w_codes`` None) are read back from it."""
    tensors = {n: getattr(module, f"w_{n}") for n in module._encoded_names}
    if tensors["codes"] is None:
        tensors["codes"] = module.recovered_codes()
    return EncodedTensor.from_parts(module._encoded_meta, tensors)


def describe(module: nn.Module) -> dict:
    """JSON-serialisable: the encoding's meta and each stored tensor's shape and dtype."""
    tensors = {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
               for n, t in stored(module).tensors().items()}
    return {"meta": module._encoded_meta, "tensors": tensors}


def empty(description: dict) -> EncodedTensor:
    """An EncodedTensor of zeros with the described shapes, for ``load_state_dict`` to fill."""
    tensors = {n: torch.zeros(t["shape"], dtype=getattr(torch, t["dtype"]))
               for n, t in description["tensors"].items()}
    return EncodedTensor.from_parts(description["meta"], tensors)


def value_counts(module: nn.Module) -> tuple[int, int]:
    """(values, nonzero values) of the stored weight, for parameter counts in reports."""
    values = stored(module).dequantize()
    return values.numel(), int(values.count_nonzero())
