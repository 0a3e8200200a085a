"""Transformer shapes: the ``ModelShape`` the planner works on and presets of well-known models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from slimkit.configs import build_config
from slimkit.errors import UserInputError


@dataclass(frozen=True)
class ModelShape:
    """The numbers that decide a decoder's training memory.

    name: label for reports.
    n_layer / hidden / n_head: depth, width (h) and attention heads (a).
    n_kv_head: key/value heads (grouped-query attention); None means n_head.
    intermediate: MLP width (4h for GPT-2, e.g. 11008 for LLaMA-7B).
    vocab: vocabulary size V (256 for the byte-level reference GPT).
    mlp: "gelu" (two Linears) or "swiglu" (gate, up and down Linears).
    norm: "layernorm" (saves mean and 1/std) or "rmsnorm" (1/rms only).
    positions: rows of a learned position table (0 with rotary embeddings).
    tied: the LM head shares the token embedding's weight.
    bias: Linear and norm layers have biases.
    fused_qkv: one Linear makes q, k and v (GPT-2) instead of three.
    dropout: dropout layers are active in training (their masks are kept for backward).
    params: total parameter count when known exactly (a live module, ``--params``); None: computed.
    """

    name: str
    n_layer: int
    hidden: int
    n_head: int
    intermediate: int
    vocab: int
    n_kv_head: int | None = None
    mlp: str = "gelu"
    norm: str = "layernorm"
    positions: int = 0
    tied: bool = False
    bias: bool = False
    fused_qkv: bool = False
    dropout: bool = False
    params: int | None = None

    def __post_init__(self) -> None:
        for field in ("n_layer", "hidden", "n_head", "intermediate", "vocab"):
            if getattr(self, field) < 1:
                raise UserInputError(f"model shape {self.name!r}: {field}={getattr(self, field)} must be at least 1")
        if self.hidden % self.n_head or self.n_head % self.kv_heads:
            raise UserInputError(f"model shape {self.name!r}: hidden={self.hidden}, n_head={self.n_head} and "
                                 f"n_kv_head={self.kv_heads} must divide evenly")
        if self.mlp not in ("gelu", "swiglu") or self.norm not in ("layernorm", "rmsnorm"):
            raise UserInputError(f"model shape {self.name!r}: mlp must be gelu or swiglu and norm layernorm or "
                                 f"rmsnorm, not {self.mlp!r} / {self.norm!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def kv_hidden(self) -> int:
        """Width of k (and of v): h * n_kv_head / n_head."""
        return self.hidden * self.kv_heads // self.n_head

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the Linear layers of one block, in forward order."""
        h, kv, i = self.hidden, self.kv_hidden, self.intermediate
        qkv = [(h, h + 2 * kv)] if self.fused_qkv else [(h, h), (h, kv), (h, kv)]
        mlp = [(h, i), (i, h)] if self.mlp == "gelu" else [(h, i), (h, i), (i, h)]
        return qkv + [(h, h)] + mlp

    def block_linear_params(self) -> int:
        """Weights of every Linear inside the blocks (what QLoRA stores as NF4)."""
        return self.n_layer * sum(a * b for a, b in self.linear_shapes())

    def n_params(self) -> int:
        """Total parameters: ``params`` when given, else counted from the shape."""
        if self.params is not None:
            return self.params
        h = self.hidden
        norm = (2 if self.norm == "layernorm" else 1) * h
        biases = sum(out for _, out in self.linear_shapes()) if self.bias else 0
        block = sum(a * b for a, b in self.linear_shapes()) + biases + 2 * norm
        embeddings = self.vocab * h * (1 if self.tied else 2) + self.positions * h
        return self.n_layer * block + embeddings + norm

    def replace(self, **changes) -> ModelShape:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelShape:
        return build_config(cls, data, "model shape")


def _gpt2(name: str, n_layer: int, hidden: int, n_head: int) -> ModelShape:
    return ModelShape(name, n_layer, hidden, n_head, 4 * hidden, 50257, positions=1024, tied=True, bias=True,
                      fused_qkv=True, dropout=True)


def _llama(name: str, n_layer: int, hidden: int, n_head: int, intermediate: int, vocab: int = 32000,
           n_kv_head: int | None = None) -> ModelShape:
    return ModelShape(name, n_layer, hidden, n_head, intermediate, vocab, n_kv_head=n_kv_head, mlp="swiglu",
                      norm="rmsnorm")


# Published shapes: GPT-2 (Radford et al. 2019), LLaMA (Touvron et al. 2023, table 2), Llama 2
# (config of meta-llama/Llama-2-70b-hf), Llama 3 (config of meta-llama/Meta-Llama-3-8B).
PRESETS: dict[str, ModelShape] = {
    "gpt2-1.5b": _gpt2("gpt2-1.5b", 48, 1600, 25),
    "llama-7b": _llama("llama-7b", 32, 4096, 32, 11008),
    "llama-13b": _llama("llama-13b", 40, 5120, 40, 13824),
    "llama-65b": _llama("llama-65b", 80, 8192, 64, 22016),
    "llama-2-70b": _llama("llama-2-70b", 80, 8192, 64, 28672, n_kv_head=8),
    "llama-3-8b": _llama("llama-3-8b", 32, 4096, 32, 14336, vocab=128256, n_kv_head=8),
}


def preset(name: str) -> ModelShape:
    """The published shape called ``name``.

    >>> round(preset("llama-7b").n_params() / 1e9, 2)
    6.74
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}, or give a "
                             "config.json or --params N") from None
