"""QuantEmbedding: an embedding table stored as packed codes; a lookup decodes only the rows it needs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit.formats import EncodedTensor
from slimkit.quantization import stored


class QuantEmbedding(nn.Module):
    """Like nn.Embedding (no max_norm), the table (num_embeddings, dim) held as codes and scales."""

    def __init__(self, num_embeddings: int, embedding_dim: int, encoded: EncodedTensor,
                 padding_idx: int | None = None) -> None:
        super().__init__()
        if tuple(encoded.shape) != (num_embeddings, embedding_dim):
            raise ValueError(f"encoded table of shape {tuple(encoded.shape)} does not fit a "
                             f"({num_embeddings}, {embedding_dim}) embedding")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.output_dtype = torch.float32  # follows .to(dtype), as an nn.Embedding's table would
        stored.store(self, encoded)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, encoded: EncodedTensor) -> QuantEmbedding:
        if embedding.max_norm is not None:
            raise ValueError("an embedding with max_norm renormalises its table in place; it cannot be quantized")
        return cls(embedding.num_embeddings, embedding.embedding_dim, encoded, embedding.padding_idx)

    @property
    def weight(self) -> Tensor:
        """The dequantized table (transformers reads ``embeddings.word_embeddings.weight`` for shapes)."""
        return self.encoded().dequantize()

    def encoded(self) -> EncodedTensor:
        return stored.stored(self)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.output_dtype = fn(torch.empty(0, dtype=self.output_dtype)).dtype
        return self

    def forward(self, index: Tensor) -> Tensor:
        return self.encoded().dequantize_rows(index).to(self.output_dtype)

    def encoded_weight_counts(self) -> tuple[int, int]:
        return stored.value_counts(self)

    def slimkit_spec(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, **stored.describe(self)}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> QuantEmbedding:
        return cls(spec["num_embeddings"], spec["embedding_dim"], stored.empty(spec), spec["padding_idx"])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format={self._encoded_meta['fmt']}"

