"""An EncodedTensor kept inside a module as buffers ``w_<field>``, and its description for io.

QuantLinear and QuantEmbedding both hold their weight this way: ``store`` registers the encoded
tensors (so they are saved, moved and counted like any buffer), ``stored`` reads them back,
``describe``/``empty`` give ``slimkit_spec``/``from_slimkit_spec`` the shapes to rebuild from.

A module whose kernel layout holds the codes may drop ``w_codes`` (set it to None) after calling
``codes_replaceable``: it then provides ``recovered_codes()`` (the codes read back from its layout)
and ``_restore_codes()`` (put them back as the buffer), and its state dict stays what it was.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slimkit.errors import ArtifactError
from slimkit.formats import EncodedTensor
from slimkit.formats.packing import packed_nbytes
from slimkit.formats.registry import format_bits


def store(module: nn.Module, encoded: EncodedTensor) -> None:
    module._encoded_meta = encoded.meta()
    module._encoded_names = sorted(encoded.tensors())
    for name, tensor in encoded.tensors().items():
        module.register_buffer(f"w_{name}", tensor)


def stored(module: nn.Module) -> EncodedTensor:
    """The module's weight; codes a kernel layout replaced (``w_codes`` None) are read back from it."""
    tensors = {n: getattr(module, f"w_{n}") for n in module._encoded_names}
    if tensors["codes"] is None:
        tensors["codes"] = _recovered(module)
    return EncodedTensor.from_parts(module._encoded_meta, tensors)


def describe(module: nn.Module) -> dict:
    """JSON-serialisable: the encoding's meta and each stored tensor's shape and dtype."""
    tensors = {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
               for n, t in stored(module).tensors().items()}
    return {"meta": module._encoded_meta, "tensors": tensors}


def empty(description: dict) -> EncodedTensor:
    """An EncodedTensor with the described shapes, for ``load_state_dict`` to fill: its parts are allocated but
    not written (untouched pages cost no memory until loading replaces them), so a model's quantized layers
    do not take their size twice while it loads."""
    tensors = {n: torch.empty(t["shape"], dtype=getattr(torch, t["dtype"]))
               for n, t in description["tensors"].items()}
    encoded = EncodedTensor.from_parts(description["meta"], tensors)
    probe = EncodedTensor.from_parts(description["meta"], {n: t.to("meta") for n, t in tensors.items()})
    try:  # a description from a file: its scales must fit its shape and groups (checked without computing)
        probe.dequantize()
    except NotImplementedError:
        pass  # an operation the meta device lacks: nothing to learn here
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:150]
        raise ArtifactError(f"the stored weight's parts do not fit its description ({reason})") from None
    return encoded


def value_counts(module: nn.Module) -> tuple[int, int]:
    """(values, nonzero values) of the stored weight, for parameter counts in reports."""
    values = stored(module).dequantize()
    return values.numel(), int(values.count_nonzero())


def codes_replaceable(module: nn.Module) -> None:
    """Let ``module`` drop ``w_codes`` while a kernel layout holds them (see the module docstring)."""
    module.register_state_dict_post_hook(_codes_into_state_dict)
    module.register_load_state_dict_pre_hook(lambda m, *_: m._restore_codes())  # codes to load into


def _codes_into_state_dict(module: nn.Module, state_dict: dict, prefix: str, _local_metadata) -> None:
    """The codes a kernel layout replaced go into the state dict where the buffer would have put them."""
    if module.w_codes is not None:
        return
    own = [name for name, t in (*module._parameters.items(), *module._buffers.items())
           if (t is not None or name == "w_codes") and name not in module._non_persistent_buffers_set]
    values = {name: state_dict.pop(prefix + name) for name in own if prefix + name in state_dict}
    values["w_codes"] = _recovered(module)
    state_dict.update((prefix + name, values[name]) for name in own if name in values)


def _recovered(module: nn.Module) -> torch.Tensor:
    """``module.recovered_codes()``; on the meta device (io builds there first) an empty stand-in of their size."""
    if module.weight_device().type != "meta":
        return module.recovered_codes()
    meta = module._encoded_meta
    nbytes = packed_nbytes(math.prod(meta["shape"]), format_bits(meta["fmt"]))
    return torch.empty(nbytes, dtype=torch.uint8, device="meta")
