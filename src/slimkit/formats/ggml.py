"""GGUF's block types (ggml's quantized tensors), decoded in torch exactly as the ``gguf`` package's reference
dequantizers decode them.

A row of a quantized GGUF tensor is a run of fixed-size blocks; each block holds its own float16 scale (and
for the ``_1`` and K types a minimum) and the codes of 32 or 256 weights:

| type | weights / bytes | one weight |
|---|---|---|
| Q4_0 | 32 / 18 | d * (q - 8), q 4-bit |
| Q4_1 | 32 / 20 | d * q + m |
| Q5_0 | 32 / 22 | d * (q - 16), q 5-bit (high bits in a 32-bit mask) |
| Q5_1 | 32 / 24 | d * q + m, q 5-bit |
| Q8_0 | 32 / 34 | d * q, q int8 |
| Q4_K | 256 / 144 | d * ls * q - dmin * lm, eight sub-blocks with 6-bit ls, lm (q4k.py) |
| Q5_K | 256 / 176 | as Q4_K with 5-bit q |
| Q6_K | 256 / 210 | d * s * (q - 32), sixteen sub-blocks with int8 s, q 6-bit |

slimkit's GGMLLinear / GGMLEmbedding keep such blocks byte for byte (quantization/ggml_layers.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats.q4k import _unpack_codes, _unpack_scales, dequantize_q4_k

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30  # ggml_type ids
# ggml_type -> (name, weights per block, bytes per block)
TYPES = {F32: ("F32", 1, 4), F16: ("F16", 1, 2), BF16: ("BF16", 1, 2), Q4_0: ("Q4_0", 32, 18),
         Q4_1: ("Q4_1", 32, 20), Q5_0: ("Q5_0", 32, 22), Q5_1: ("Q5_1", 32, 24), Q8_0: ("Q8_0", 32, 34),
         Q4_K: ("Q4_K", 256, 144), Q5_K: ("Q5_K", 256, 176), Q6_K: ("Q6_K", 256, 210)}
BLOCK_TYPES = tuple(t for t, (_, weights, _) in TYPES.items() if weights > 1)
TYPE_IDS = {name: t for t, (name, _, _) in TYPES.items()}


def row_bytes(ggml_type: int, cols: int) -> int:
    """Bytes of one row of ``cols`` weights (``cols`` a multiple of the type's block)."""
    _, weights, size = TYPES[ggml_type]
    return cols // weights * size


def dequantize(blocks: Tensor, ggml_type: int, shape: tuple[int, int]) -> Tensor:
    """float32 ``shape`` tensor of the uint8 ``blocks`` (rows of whole blocks) of a quantized ggml type.

    >>> import numpy as np, gguf
    >>> raw = torch.from_numpy(gguf.quants.quantize(np.ones((2, 64), np.float32), gguf.GGMLQuantizationType.Q8_0))
    >>> dequantize(raw, Q8_0, (2, 64)).sum()
    tensor(128.)
    """
    rows, cols = shape
    if ggml_type == Q4_K:
        return dequantize_q4_k(blocks, shape)
    raw = blocks.reshape(-1, TYPES[ggml_type][2])
    return _DECODERS[ggml_type](raw).reshape(rows, cols)


def _f16(raw: Tensor, start: int) -> Tensor:
    return raw[:, start:start + 2].contiguous().view(torch.float16).float()  # (blocks, 1)


def _nibbles(qs: Tensor) -> Tensor:
    """(blocks, 32) codes of 16 bytes: low nibbles are weights 0-15, high nibbles 16-31."""
    return torch.cat([qs & 15, qs >> 4], 1)


def _high_bits(qh: Tensor) -> Tensor:
    """(blocks, 32) fifth bits of the little-endian 32-bit mask ``qh`` (blocks, 4)."""
    bits = qh.long()
    mask = bits[:, 0] | (bits[:, 1] << 8) | (bits[:, 2] << 16) | (bits[:, 3] << 24)
    return ((mask[:, None] >> torch.arange(32)) & 1).to(torch.uint8)


def _q4_0(raw: Tensor) -> Tensor:
    return _f16(raw, 0) * (_nibbles(raw[:, 2:]).float() - 8)


def _q4_1(raw: Tensor) -> Tensor:
    return _f16(raw, 0) * _nibbles(raw[:, 4:]).float() + _f16(raw, 2)


def _q5_0(raw: Tensor) -> Tensor:
    q = _nibbles(raw[:, 6:]) | (_high_bits(raw[:, 2:6]) << 4)
    return _f16(raw, 0) * (q.float() - 16)


def _q5_1(raw: Tensor) -> Tensor:
    q = _nibbles(raw[:, 8:]) | (_high_bits(raw[:, 4:8]) << 4)
    return _f16(raw, 0) * q.float() + _f16(raw, 2)


def _q8_0(raw: Tensor) -> Tensor:
    return _f16(raw, 0) * raw[:, 2:].contiguous().view(torch.int8).float()


def _q5_k(raw: Tensor) -> Tensor:
    n = raw.shape[0]
    ls, lm = _unpack_scales(raw[:, 4:16])  # (blocks, 8)
    high = (raw[:, 16:48].reshape(n, 1, 32) >> torch.arange(8, dtype=torch.uint8).reshape(1, 8, 1)) & 1
    q = _unpack_codes(raw[:, 48:]) | (high << 4)  # (blocks, 8, 32)
    scale, low = (_f16(raw, 0) * ls.float())[..., None], (_f16(raw, 2) * lm.float())[..., None]
    return (scale * q.float() - low).reshape(n, 256)


def _q6_k(raw: Tensor) -> Tensor:
    n = raw.shape[0]
    ql, qh = raw[:, :128], raw[:, 128:192]
    scales = raw[:, 192:208].contiguous().view(torch.int8).float()  # (blocks, 16)
    d = _f16(raw, 208) * scales
    low = (ql.reshape(n, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8).reshape(1, 1, 2, 1)) & 15
    high = (qh.reshape(n, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape(1, 1, 4, 1)) & 3
    q = (low.reshape(n, 8, 32) | (high.reshape(n, 8, 32) << 4)).float() - 32
    return (d[..., None] * q.reshape(n, 16, 16)).reshape(n, 256)


_DECODERS = {Q4_0: _q4_0, Q4_1: _q4_1, Q5_0: _q5_0, Q5_1: _q5_1, Q8_0: _q8_0, Q5_K: _q5_k, Q6_K: _q6_k}
