"""Q4KLinear and Q4KEmbedding: a Linear weight or an embedding table held as GGUF Q4_K super-blocks, kept
byte for byte as the file had them.

Q4_K (llama.cpp's "K-quant") stores 256 weights as float16 d and dmin, eight 6-bit sub-block scales and
minimums and 4-bit codes: x = d*ls*q - dmin*lm. The sub-block minimum is not an integer zero point, so
slimkit's EncodedTensor cannot hold it exactly; these layers keep the blocks instead (4.5 bits a weight in
memory) and decode them on every call (the embedding only the rows it looks up) (formats/q4k.py), so that a Q4_K GGUF imports without dequantizing
to a float copy and exports back to the same bytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.errors import ArtifactError
from slimkit.formats.q4k import BLOCK_BYTES, QK_K, dequantize_q4_k


class Q4KLinear(nn.Module):
    """y = x W^T + b with W decoded from ``blocks``: uint8 (out, in/256*144), in a multiple of 256."""

    def __init__(self, in_features: int, out_features: int, blocks: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        expected = (out_features, in_features // QK_K * BLOCK_BYTES)
        if in_features % QK_K or blocks.dtype != torch.uint8 or tuple(blocks.shape) != expected:
            raise ValueError(f"Q4_K blocks {blocks.dtype} {tuple(blocks.shape)} do not fit a ({out_features}, "
                             f"{in_features}) Linear: expected uint8 {expected} (inputs a multiple of {QK_K})")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("blocks", blocks)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_q4_k(self.blocks, (self.out_features, self.in_features)).to(dtype)

    @property
    def weight(self) -> Tensor:
        """The decoded weight (read by code that asks a layer for its shape or dtype)."""
        return self.dequantized_weight()

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def encoded_weight_counts(self) -> tuple[int, int]:
        weight = self.dequantized_weight()
        return weight.numel(), int(weight.count_nonzero())

    def slimkit_spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Q4KLinear:
        rows, cols = _sizes(spec, "out_features", "in_features")
        bias = torch.zeros(rows) if spec.get("bias") else None
        return cls(cols, rows, torch.zeros(rows, cols // QK_K * BLOCK_BYTES, dtype=torch.uint8), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format=gguf q4_k"


class Q4KEmbedding(nn.Module):
    """Like nn.Embedding, the (num_embeddings, dim) table held as Q4_K blocks; a lookup decodes its rows only."""

    def __init__(self, num_embeddings: int, embedding_dim: int, blocks: Tensor) -> None:
        super().__init__()
        expected = (num_embeddings, embedding_dim // QK_K * BLOCK_BYTES)
        if embedding_dim % QK_K or blocks.dtype != torch.uint8 or tuple(blocks.shape) != expected:
            raise ValueError(f"Q4_K blocks {blocks.dtype} {tuple(blocks.shape)} do not fit a ({num_embeddings}, "
                             f"{embedding_dim}) table: expected uint8 {expected} (width a multiple of {QK_K})")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("blocks", blocks)
        self.output_dtype = torch.float32  # follows .to(dtype), as an nn.Embedding's table would

    @property
    def weight(self) -> Tensor:
        return dequantize_q4_k(self.blocks, (self.num_embeddings, self.embedding_dim))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.output_dtype = fn(torch.empty(0, dtype=self.output_dtype)).dtype
        return self

    def forward(self, index: Tensor) -> Tensor:
        flat = index.reshape(-1)
        rows = dequantize_q4_k(self.blocks[flat], (flat.numel(), self.embedding_dim))
        return rows.reshape(*index.shape, self.embedding_dim).to(self.output_dtype)

    def encoded_weight_counts(self) -> tuple[int, int]:
        weight = self.weight
        return weight.numel(), int(weight.count_nonzero())

    def slimkit_spec(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Q4KEmbedding:
        rows, cols = _sizes(spec, "num_embeddings", "embedding_dim")
        return cls(rows, cols, torch.zeros(rows, cols // QK_K * BLOCK_BYTES, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format=gguf q4_k"


def _sizes(spec: dict, *keys: str) -> tuple[int, ...]:
    sizes = tuple(spec.get(key) for key in keys)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ArtifactError(f"a Q4_K layer's spec needs positive integer {' and '.join(keys)}, got {spec!r:.200}")
    return sizes
