"""Compact storage of sparse float tensors: a bitmask or CSR plus the nonzero values.

A value counts as stored when its *bit pattern* is not zero, so -0.0 survives and decoding gives
back the tensor bit for bit. ``encode_sparse`` picks the smaller of the two layouts and returns
None when neither is worth it (at most ``MAX_RATIO`` of the raw bytes), so dense tensors stay raw.

>>> t = torch.zeros(64, 64); t[::8, ::8] = 1.0
>>> encoding, parts = encode_sparse(t)
>>> encoding, torch.equal(decode_sparse(encoding, parts, t.shape, t.dtype), t)
('bitmask', True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ENCODINGS = ("bitmask", "csr")
MAX_RATIO = 0.75  # store compactly only when that saves at least a quarter of the bytes (50% sparse fp32: 0.53x)
MIN_NUMEL = 256  # smaller tensors are not worth the extra safetensors entries
_BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
         torch.float64: torch.int64}


def nonzero_bits(t: Tensor) -> Tensor:
    """Boolean mask (same shape) of the entries whose bit pattern is not all zeros."""
    return t.view(_BITS[t.dtype]) != 0


def encode_sparse(t: Tensor) -> tuple[str, dict[str, Tensor]] | None:
    """("bitmask" | "csr", parts) for a float tensor when compact storage pays, else None."""
    if t.dtype not in _BITS or t.numel() < MIN_NUMEL:
        return None
    keep = nonzero_bits(t.contiguous())
    nnz, size = int(keep.sum()), t.element_size()
    rows = t.shape[0] if t.dim() > 1 else 1
    cols = t.numel() // rows
    index_bytes = 2 if cols <= 32767 else 4
    bitmask_bytes = -(-t.numel() // 8) + nnz * size
    csr_bytes = (rows + 1) * 4 + nnz * (index_bytes + size)
    if min(bitmask_bytes, csr_bytes) > MAX_RATIO * t.numel() * size:
        return None
    flat, flat_keep = t.contiguous().reshape(-1), keep.reshape(-1)
    values = flat[flat_keep].clone()
    if bitmask_bytes <= csr_bytes:
        packed = torch.from_numpy(np.packbits(flat_keep.numpy()))  # (ceil(numel / 8),) uint8
        return "bitmask", {"mask": packed, "values": values}
    grid = flat_keep.reshape(rows, cols)
    counts = grid.sum(1, dtype=torch.int32)
    crow = torch.cat([torch.zeros(1, dtype=torch.int32), counts.cumsum(0, dtype=torch.int32)])
    col = grid.nonzero()[:, 1].to(torch.int16 if index_bytes == 2 else torch.int32)
    return "csr", {"crow": crow, "col": col, "values": values}


def decode_sparse(encoding: str, parts: dict[str, Tensor], shape, dtype: torch.dtype) -> Tensor:
    """The dense tensor ``encode_sparse`` described; ValueError if the parts do not fit ``shape``."""
    numel = int(np.prod(shape)) if len(shape) else 1
    values = parts["values"]
    if values.dtype != dtype:
        raise ValueError(f"values are {values.dtype}, expected {dtype}")
    if encoding == "bitmask":
        keep = torch.from_numpy(np.unpackbits(parts["mask"].numpy(), count=numel).astype(bool))
    elif encoding == "csr":
        crow, col = parts["crow"].long(), parts["col"].long()
        rows = len(crow) - 1
        row = torch.repeat_interleave(torch.arange(rows), crow.diff())
        keep = torch.zeros(rows, numel // max(1, rows), dtype=torch.bool)
        keep[row, col] = True
        keep = keep.reshape(-1)
    else:
        raise ValueError(f"unknown sparse encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    if int(keep.sum()) != values.numel():
        raise ValueError(f"{int(keep.sum())} positions but {values.numel()} values")
    out = torch.zeros(numel, dtype=dtype)
    out[keep] = values
    return out.reshape(shape)
