"""Attention units: modules whose heads are pruned as wholes (q, k, v rows and the output columns of a head).

- slimkit's GPT ``CausalSelfAttention`` (fused qkv + proj), replaced by a ``PrunedSelfAttention``.
- A Hugging Face BERT layer (``attention.self.query/key/value``, ``attention.output.dense``,
  ``intermediate.dense``, ``output.dense``, e.g. MiniLM): heads, plus its feed-forward neurons as
  one channel group; the layer keeps its classes with smaller Linear layers inside.

>>> unit = find_unit(gpt.blocks[0].attn, "blocks.0.attn")  # doctest: +SKIP
>>> unit.n_head, unit.head_dim  # doctest: +SKIP
(4, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from slimkit.pruning.modules import PrunedSelfAttention, shrink_linear


def _gpt_attention(m: nn.Module) -> bool:
    return isinstance(m, PrunedSelfAttention) or (type(m).__name__ == "CausalSelfAttention" and hasattr(m, "qkv")
                                                   and hasattr(m, "proj") and hasattr(m, "n_head"))


def _bert_layer(m: nn.Module) -> bool:
    attention = getattr(m, "attention", None)
    return (hasattr(getattr(attention, "self", None), "query") and hasattr(getattr(m, "intermediate", None), "dense")
            and hasattr(getattr(m, "output", None), "dense"))


def is_unit(m: nn.Module) -> bool:
    return _gpt_attention(m) or _bert_layer(m)


@dataclass
class AttentionUnit:
    name: str
    kind: str  # "gpt" or "bert"
    n_head: int
    head_dim: int
    input_layers: list[str]  # read the unit's input
    output_layer: str  # writes the unit's output
    spaces: list = field(default_factory=list)  # extra channel groups inside (BERT feed-forward neurons)

    def head_slices(self, model: nn.Module) -> list[tuple[Tensor, int, Tensor]]:
        """(weight, dim, head index (heads, rows-or-cols per head)) for every weight cut with the heads."""
        width, idx = self.n_head * self.head_dim, torch.arange(self.n_head * self.head_dim).view(self.n_head, -1)
        if self.kind == "gpt":
            unit = model.get_submodule(self.name)
            q_k_v = torch.cat([idx, idx + width, idx + 2 * width], dim=1)  # (heads, 3 * head_dim)
            return [(unit.qkv.weight, 0, q_k_v), (unit.proj.weight, 1, idx)]
        attention = model.get_submodule(self.name).attention
        rows = [(getattr(attention.self, n).weight, 0, idx) for n in ("query", "key", "value")]
        return rows + [(attention.output.dense.weight, 1, idx)]

    def keep_heads(self, model: nn.Module, heads: Tensor) -> None:
        """Replace the unit's layers so that only ``heads`` (sorted indices) remain."""
        d = self.head_dim
        cols = (heads.view(-1, 1) * d + torch.arange(d)).flatten()  # positions within one projection
        if self.kind == "gpt":
            old = model.get_submodule(self.name)
            new = PrunedSelfAttention(old.qkv.in_features, len(heads), d, getattr(old, "dropout", 0.0))
            width = self.n_head * d
            new.qkv = shrink_linear(old.qkv, out_keep=torch.cat([cols, cols + width, cols + 2 * width]))
            new.proj = shrink_linear(old.proj, in_keep=cols)
            model.set_submodule(self.name, new.to(old.qkv.weight.device).train(old.training))
        else:
            attention = model.get_submodule(self.name).attention
            for n in ("query", "key", "value"):
                setattr(attention.self, n, shrink_linear(getattr(attention.self, n), out_keep=cols))
            attention.output.dense = shrink_linear(attention.output.dense, in_keep=cols)
            attention.self.num_attention_heads, attention.self.all_head_size = len(heads), len(heads) * d
        self.n_head = len(heads)


def find_unit(m: nn.Module, name: str) -> AttentionUnit:
    """The AttentionUnit of a module ``is_unit`` accepted."""
    from slimkit.pruning.graph import Space

    if _gpt_attention(m):
        n_head = m.n_head
        return AttentionUnit(name, "gpt", n_head, m.proj.in_features // n_head, [f"{name}.qkv"], f"{name}.proj")
    attention = m.attention.self
    n_head = getattr(attention, "num_attention_heads")
    inner = m.intermediate.dense.out_features
    ffn = Space(inner, producers=[f"{name}.intermediate.dense"], consumers=[(f"{name}.output.dense", 0, 0, inner)])
    return AttentionUnit(name, "bert", n_head, attention.attention_head_size,
                         [f"{name}.attention.self.{n}" for n in ("query", "key", "value")], f"{name}.output.dense",
                         spaces=[ffn])


def update_config(model: nn.Module, units: list[AttentionUnit]) -> None:
    """Record a uniform new feed-forward width in a Hugging Face config (heads stay per layer, in the layers)."""
    sizes = {model.get_submodule(u.name).intermediate.dense.out_features for u in units if u.kind == "bert"}
    if len(sizes) == 1 and hasattr(getattr(model, "config", None), "intermediate_size"):
        model.config.intermediate_size = sizes.pop()
