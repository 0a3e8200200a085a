"""GGMLLinear and GGMLEmbedding: a Linear weight or an embedding table held as a GGUF file's quantized blocks
(Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, ...: formats/ggml.py), kept byte for byte as the file had them.

Most ggml types store a float minimum (Q4_1, the K-quants) or a per-block scale built from two numbers
(d * sub-block scale) that slimkit's EncodedTensor cannot hold exactly. These layers keep the blocks instead
(their own bits per weight in memory) and decode them on every call (the embedding only the rows it looks
up), so that a GGUF file imports without a float copy and exports back to the same bytes. A tied output
layer shares its embedding's blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.errors import ArtifactError
from slimkit.formats.ggml import BLOCK_TYPES, TYPE_IDS, TYPES, dequantize, row_bytes


def only_gguf(name: str, module: nn.Module, target: str) -> str:
    """The refusal for exporting a layer of GGUF blocks to ``target``."""
    return (f"layer {name!r} holds GGUF {TYPES[module.ggml_type][0]} blocks (imported from a GGUF file), which "
            f"{target} cannot store without requantizing; export it with --to gguf, or import a Q4_0/Q8_0 file "
            "(those become slimkit's int4/int8 groups, which every target writes)")


def _check(blocks: Tensor, ggml_type: int, rows: int, cols: int, what: str) -> None:
    if ggml_type not in BLOCK_TYPES:
        raise ValueError(f"ggml type {ggml_type} is not a quantized block type ({sorted(BLOCK_TYPES)})")
    name, weights, _ = TYPES[ggml_type]
    expected = (rows, row_bytes(ggml_type, cols))
    if cols % weights or blocks.dtype != torch.uint8 or tuple(blocks.shape) != expected:
        raise ValueError(f"{name} blocks {blocks.dtype} {tuple(blocks.shape)} do not fit a {what} of ({rows}, "
                         f"{cols}): expected uint8 {expected} (a row a multiple of {weights} weights)")


class GGMLLinear(nn.Module):
    """y = x W^T + b with W decoded from ``blocks``: uint8 (out, bytes of a row of ``in`` weights)."""

    def __init__(self, in_features: int, out_features: int, blocks: Tensor, ggml_type: int,
                 bias: Tensor | None = None) -> None:
        super().__init__()
        _check(blocks, ggml_type, out_features, in_features, "Linear")
        self.in_features, self.out_features, self.ggml_type = in_features, out_features, ggml_type
        self.register_buffer("blocks", blocks)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.blocks, self.ggml_type, (self.out_features, self.in_features)).to(dtype)

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
        return {"in_features": self.in_features, "out_features": self.out_features,
                "ggml_type": TYPES[self.ggml_type][0], "bias": self.bias is not None}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> GGMLLinear:
        rows, cols = _sizes(spec, "out_features", "in_features")
        ggml_type = _type(spec)
        blocks = torch.zeros(rows, row_bytes(ggml_type, cols), dtype=torch.uint8)
        return cls(cols, rows, blocks, ggml_type, torch.zeros(rows) if spec.get("bias") else None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format=gguf {TYPES[self.ggml_type][0]}"


class GGMLEmbedding(nn.Module):
    """Like nn.Embedding, the (num_embeddings, dim) table held as ggml blocks; a lookup decodes its rows only."""

    def __init__(self, num_embeddings: int, embedding_dim: int, blocks: Tensor, ggml_type: int) -> None:
        super().__init__()
        _check(blocks, ggml_type, num_embeddings, embedding_dim, "table")
        self.num_embeddings, self.embedding_dim, self.ggml_type = num_embeddings, embedding_dim, ggml_type
        self.register_buffer("blocks", blocks)
        self.output_dtype = torch.float32  # follows .to(dtype), as an nn.Embedding's table would

    @property
    def weight(self) -> Tensor:
        return dequantize(self.blocks, self.ggml_type, (self.num_embeddings, self.embedding_dim))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.output_dtype = fn(torch.empty(0, dtype=self.output_dtype)).dtype
        return self

    def forward(self, index: Tensor) -> Tensor:
        flat = index.reshape(-1)
        rows = dequantize(self.blocks[flat], self.ggml_type, (flat.numel(), self.embedding_dim))
        return rows.reshape(*index.shape, self.embedding_dim).to(self.output_dtype)

    def output_layer(self) -> GGMLLinear:
        """A Linear (dim -> num_embeddings) on the same blocks: a tied output layer, one copy of the table."""
        return GGMLLinear(self.embedding_dim, self.num_embeddings, self.blocks, self.ggml_type)

    def encoded_weight_counts(self) -> tuple[int, int]:
        weight = self.weight
        return weight.numel(), int(weight.count_nonzero())

    def slimkit_spec(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "ggml_type": TYPES[self.ggml_type][0]}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> GGMLEmbedding:
        rows, cols = _sizes(spec, "num_embeddings", "embedding_dim")
        ggml_type = _type(spec)
        return cls(rows, cols, torch.zeros(rows, row_bytes(ggml_type, cols), dtype=torch.uint8), ggml_type)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format=gguf {TYPES[self.ggml_type][0]}"


def _sizes(spec: dict, *keys: str) -> tuple[int, ...]:
    sizes = tuple(spec.get(key) for key in keys)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ArtifactError(f"a ggml layer's spec needs positive integer {' and '.join(keys)}, got {spec!r:.200}")
    return sizes


def _type(spec: dict) -> int:
    ggml_type = TYPE_IDS.get(spec.get("ggml_type"))
    if ggml_type not in BLOCK_TYPES:
        names = sorted(TYPES[t][0] for t in BLOCK_TYPES)
        raise ArtifactError(f"a ggml layer's spec names type {spec.get('ggml_type')!r}; known: {', '.join(names)}")
    _, weights, _ = TYPES[ggml_type]
    if spec.get("in_features", spec.get("embedding_dim")) % weights:
        raise ArtifactError(f"a {TYPES[ggml_type][0]} layer's rows must be whole blocks of {weights}: {spec!r:.200}")
    return ggml_type
