"""QuantEmbedding: an embedding table stored as packed codes; a lookup decodes only the rows it needs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit.formats import EncodedTensor


class QuantEmbedding(nn.Module):
    """Like nn.Embedding (no max_norm), the table (num_embeddings, dim) held as codes and scales."""

    def __init__(self, num_embeddings: int, embedding_dim: int, encoded: EncodedTensor,
                 padding_idx: int | None = None) -> None:
        super().__init__()
        if tuple(encoded.shape) != (num_embeddings, embedding_dim):
            raise ValueError(f"encoded table of shape {tuple(encoded.shape)} does not fit a "
                             f"({num_embeddings}, {embedding_dim}) embedding")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self._meta = encoded.meta()
        self._names = sorted(encoded.tensors())
        for name, tensor in encoded.tensors().items():
            self.register_buffer(f"w_{name}", tensor)

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
        return EncodedTensor.from_parts(self._meta, {n: getattr(self, f"w_{n}") for n in self._names})

    def forward(self, index: Tensor) -> Tensor:
        return self.encoded().dequantize_rows(index)

    def encoded_weight_counts(self) -> tuple[int, int]:
        """(values, nonzero values) of the table held as codes, for parameter counts in reports."""
        return self.num_embeddings * self.embedding_dim, int(self.weight.count_nonzero())

    def slimkit_spec(self) -> dict:
        tensors = {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                   for n, t in self.encoded().tensors().items()}
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "meta": self._meta, "tensors": tensors}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> QuantEmbedding:
        tensors = {n: torch.zeros(t["shape"], dtype=getattr(torch, t["dtype"])) for n, t in spec["tensors"].items()}
        return cls(spec["num_embeddings"], spec["embedding_dim"], EncodedTensor.from_parts(spec["meta"], tensors),
                   spec["padding_idx"])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format={self._meta.get('fmt')}"

