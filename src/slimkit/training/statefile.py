"""Training state as JSON plus tensors, so that resuming unpickles nothing.

``encode`` turns the nested state a checkpoint holds (state dicts of model, optimizer, scheduler and
GradScaler, RNG states, batch position) into JSON-able values; tensors go into a separate dict (saved
with safetensors) or, for small states, inline as base64. Tuples, dicts with non-string keys,
NumPy arrays and non-finite floats are tagged so that ``decode`` gives back equal values (floats
round-trip exactly through Python's repr), which keeps resuming bit-exact.

>>> tensors = {}; text = json.dumps(encode({"step": torch.tensor(3.0), "betas": (0.9, 0.999)}, tensors))
>>> decode(json.loads(text), tensors, "state.json")["betas"]
(0.9, 0.999)
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import torch

from slimkit.errors import ArtifactError
from slimkit.untrusted import DTYPES, check_shape

_NUMPY_DTYPES = ("uint32", "int64", "float64")
_TAGS = ("__tensor__", "__inline__", "__tuple__", "__items__", "__ndarray__", "__float__")


def encode(value, tensors: dict[str, torch.Tensor] | None):
    """A JSON-able copy of ``value``; tensors are moved into ``tensors`` (None: inline base64)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensors is None:
            raw = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            return {"__inline__": {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape),
                                   "data": base64.b64encode(raw).decode()}}
        key = f"t{len(tensors)}"
        tensors[key] = tensor
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": {"dtype": str(value.dtype), "data": value.tolist()}}
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in value):
            return {k: encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[encode(k, tensors), encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (np.integer, np.floating)):
        return encode(value.item(), tensors)
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def decode(value, tensors: dict[str, torch.Tensor] | None, where: str):
    """The value ``encode`` wrote; ArtifactError naming ``where`` on anything it could not have written."""
    if isinstance(value, list):
        return [decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, body = next(iter(value.items()))
        try:
            return _decode_tagged(tag, body, tensors, where)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise ArtifactError(f"{where}: a {tag} entry is malformed ({exc})") from None
    return {k: decode(v, tensors, where) for k, v in value.items()}


def _decode_tagged(tag: str, body, tensors, where: str):
    if tag == "__tensor__":
        if tensors is None or body not in tensors:
            raise ArtifactError(f"{where}: names tensor {str(body)[:40]!r}, which the tensor file lacks")
        return tensors[body]
    if tag == "__inline__":
        if body["dtype"] not in DTYPES.values():
            raise ValueError(f"dtype {str(body['dtype'])[:20]!r}")
        check_shape(body["shape"], where)
        dtype = getattr(torch, body["dtype"])
        raw = bytearray(base64.b64decode(body["data"], validate=True))
        if len(raw) != math.prod(body["shape"]) * dtype.itemsize:
            raise ValueError("data length does not fit dtype and shape")
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return flat.view(dtype).reshape(body["shape"]).clone()
    if tag == "__tuple__":
        return tuple(decode(body, tensors, where))
    if tag == "__items__":
        return {_hashable(decode(k, tensors, where)): decode(v, tensors, where) for k, v in body}
    if tag == "__ndarray__":
        if body["dtype"] not in _NUMPY_DTYPES:
            raise ValueError(f"dtype {str(body['dtype'])[:20]!r}")
        return np.array(body["data"], dtype=body["dtype"])
    if body not in ("inf", "-inf", "nan"):
        raise ValueError(f"{str(body)[:20]!r} is not a non-finite float")
    return float(body)


def _hashable(key):
    if isinstance(key, (list, dict)):
        raise TypeError("a key must be a number, string or tuple")
    return key
