"""Attention units: modules whose heads are pruned as wholes (q, k, v rows and the output columns of a head).

A unit kind is found by structure (the projections it holds), and a new kind registers once
(``register_unit``). Built in:

- ``gpt``: fused ``qkv`` + ``proj`` Linear layers and an ``n_head`` (slimkit's GPT attention),
  replaced by a ``PrunedSelfAttention``.
- ``fused``: fused ``qkv`` + ``proj`` with ``num_heads`` or ``heads`` (a ViT's, timm's attention), taken
  as a unit only when a ``PrunedSelfAttention`` with its weights computes the same on a random input.
- ``bert``: a Hugging Face BERT layer (``attention.self.query/key/value``, ``attention.output.dense``,
  ``intermediate.dense``, ``output.dense``, e.g. MiniLM): heads, plus its feed-forward neurons as
  one channel group; the layer keeps its classes with smaller Linear layers inside.
- ``gpt2``: a Hugging Face GPT-2 attention (``c_attn`` + ``c_proj``, its Conv1D layers already swapped for
  ``Conv1DLinear``): the heads' q, k, v columns leave together, ``num_heads``/``split_size`` follow.
- ``llama``: ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and a ``head_dim`` (Llama, Mistral, Qwen2 and
  the other Hugging Face Llama-family attentions, grouped-query attention included). The unit's
  heads are its key/value heads: one is removed with the query heads that share it, so every group
  keeps its size and ``num_key_value_groups`` stays right.

>>> unit = find_unit(gpt.blocks[0].attn, "blocks.0.attn")  # doctest: +SKIP
>>> unit.n_head, unit.head_dim  # doctest: +SKIP
(4, 32)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from slimkit.pruning.modules import PrunedSelfAttention, shrink_linear
from slimkit.pruning.spaces import Space, Use


@dataclass
class AttentionUnit:
    name: str
    kind: str  # the registered UnitKind's name
    n_head: int  # prunable heads (key/value heads where queries share them)
    head_dim: int
    input_layers: list[str]  # read the unit's input
    output_layer: str  # writes the unit's output
    spaces: list = field(default_factory=list)  # extra channel groups inside (BERT feed-forward neurons)
    group: int = 1  # query heads per prunable head (grouped-query attention)

    def head_slices(self, model: nn.Module) -> list[tuple[Tensor, int, Tensor]]:
        """(weight, dim, head index (heads, rows-or-cols per head)) for every weight cut with the heads."""
        return KINDS[self.kind].head_slices(self, model.get_submodule(self.name))

    def keep_heads(self, model: nn.Module, heads: Tensor) -> None:
        """Replace the unit's layers so that only ``heads`` (sorted indices) remain."""
        replaced = KINDS[self.kind].keep(self, model.get_submodule(self.name), heads)
        if replaced is not None:
            model.set_submodule(self.name, replaced)
        self.n_head = len(heads)

    def columns(self, heads: Tensor, per_head: int) -> Tensor:
        """Positions of ``heads`` within a projection of ``per_head`` rows per head."""
        return (heads.view(-1, 1) * per_head + torch.arange(per_head)).flatten()


@dataclass(frozen=True)
class UnitKind:
    """How to recognise a kind of attention block, describe it, score its heads and cut them."""

    name: str
    matches: Callable[[nn.Module], bool]
    describe: Callable[[nn.Module, str], AttentionUnit]
    head_slices: Callable[[AttentionUnit, nn.Module], list]
    keep: Callable[[AttentionUnit, nn.Module, Tensor], nn.Module | None]  # a replacement, or None if cut in place


KINDS: dict[str, UnitKind] = {}


def register_unit(kind: UnitKind) -> None:
    """Teach the dependency graph an attention block; it is then a leaf of the trace."""
    KINDS[kind.name] = kind


def unit_kind(m: nn.Module) -> UnitKind | None:
    return next((k for k in KINDS.values() if k.matches(m)), None)


def find_unit(m: nn.Module, name: str) -> AttentionUnit:
    """The AttentionUnit of a module ``unit_kind`` recognises."""
    return unit_kind(m).describe(m, name)


def _linear(m: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(m, n, None), nn.Linear) for n in names)


# --- slimkit's GPT: fused qkv -------------------------------------------------------------------

def _gpt_matches(m: nn.Module) -> bool:
    return (_linear(m, "qkv", "proj") and isinstance(getattr(m, "n_head", None), int)
            and m.qkv.out_features == 3 * m.proj.in_features)


def _gpt_describe(m: nn.Module, name: str) -> AttentionUnit:
    return AttentionUnit(name, "gpt", m.n_head, m.proj.in_features // m.n_head, [f"{name}.qkv"], f"{name}.proj")


def _gpt_slices(unit: AttentionUnit, m: nn.Module) -> list:
    width, idx = unit.n_head * unit.head_dim, torch.arange(unit.n_head * unit.head_dim).view(unit.n_head, -1)
    q_k_v = torch.cat([idx, idx + width, idx + 2 * width], dim=1)  # (heads, 3 * head_dim)
    return [(m.qkv.weight, 0, q_k_v), (m.proj.weight, 1, idx)]


def _gpt_keep(unit: AttentionUnit, old: nn.Module, heads: Tensor) -> nn.Module:
    d, width = unit.head_dim, unit.n_head * unit.head_dim
    cols = unit.columns(heads, d)
    new = PrunedSelfAttention(old.qkv.in_features, len(heads), d, getattr(old, "dropout", 0.0))
    new.qkv = shrink_linear(old.qkv, out_keep=torch.cat([cols, cols + width, cols + 2 * width]))
    new.proj = shrink_linear(old.proj, in_keep=cols)
    return new.to(old.qkv.weight.device).train(old.training)


# --- fused qkv with a head count of another name (ViT, timm): checked against the replacement --------

_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> causal, or None: not this kind


def _fused_heads(m: nn.Module) -> int | None:
    return next((getattr(m, a) for a in ("num_heads", "heads") if isinstance(getattr(m, a, None), int)), None)


def _fused_matches(m: nn.Module) -> bool:
    heads = _fused_heads(m)
    if not (heads and _linear(m, "qkv", "proj") and m.qkv.out_features == 3 * m.proj.in_features
            and m.proj.in_features % heads == 0):
        return False
    if m not in _CHECKED:
        _CHECKED[m] = _causality(m, heads)
    return _CHECKED[m] is not None


@torch.no_grad()
def _causality(m: nn.Module, heads: int) -> bool | None:
    """Whether ``m`` computes what a (causal or not) PrunedSelfAttention with its weights computes on a
    random input; None if neither: its forward does more (norms on q/k, masks...), so it is no unit."""
    x = torch.randn(2, 5, m.qkv.in_features, generator=torch.Generator().manual_seed(0)).to(m.qkv.weight)
    was_training = m.training
    try:
        expected = m.eval()(x)
        for causal in (False, True):
            twin = PrunedSelfAttention(m.qkv.in_features, heads, m.proj.in_features // heads, causal=causal)
            twin.qkv, twin.proj = m.qkv, m.proj
            if torch.allclose(twin(x), expected, rtol=1e-4, atol=1e-5):  # float32 sums in another order
                return causal
    except Exception:  # noqa: BLE001 - a forward that wants other inputs is not this kind
        return None
    finally:
        m.train(was_training)
    return None


def _fused_describe(m: nn.Module, name: str) -> AttentionUnit:
    heads = _fused_heads(m)
    return AttentionUnit(name, "fused", heads, m.proj.in_features // heads, [f"{name}.qkv"], f"{name}.proj")


def _fused_keep(unit: AttentionUnit, old: nn.Module, heads: Tensor) -> nn.Module:
    dropout = getattr(getattr(old, "attn_drop", None), "p", 0.0)
    new = _gpt_keep(unit, old, heads)
    new.dropout, new.causal = dropout, _CHECKED[old]
    return new


# --- Hugging Face BERT layer --------------------------------------------------------------------

def _bert_matches(m: nn.Module) -> bool:
    attention = getattr(m, "attention", None)
    return (hasattr(getattr(attention, "self", None), "query") and hasattr(getattr(m, "intermediate", None), "dense")
            and hasattr(getattr(m, "output", None), "dense"))


def _bert_describe(m: nn.Module, name: str) -> AttentionUnit:
    attention = m.attention.self
    inner = m.intermediate.dense.out_features
    ffn = Space(inner, producers=[f"{name}.intermediate.dense"], consumers=[Use(f"{name}.output.dense", 0, 0, inner)])
    return AttentionUnit(name, "bert", attention.num_attention_heads, attention.attention_head_size,
                         [f"{name}.attention.self.{n}" for n in ("query", "key", "value")], f"{name}.output.dense",
                         spaces=[ffn])


def _bert_slices(unit: AttentionUnit, m: nn.Module) -> list:
    idx = torch.arange(unit.n_head * unit.head_dim).view(unit.n_head, -1)
    rows = [(getattr(m.attention.self, n).weight, 0, idx) for n in ("query", "key", "value")]
    return rows + [(m.attention.output.dense.weight, 1, idx)]


def _bert_keep(unit: AttentionUnit, m: nn.Module, heads: Tensor) -> None:
    attention, cols = m.attention, unit.columns(heads, unit.head_dim)
    for n in ("query", "key", "value"):
        setattr(attention.self, n, shrink_linear(getattr(attention.self, n), out_keep=cols))
    attention.output.dense = shrink_linear(attention.output.dense, in_keep=cols)
    attention.self.num_attention_heads, attention.self.all_head_size = len(heads), len(heads) * unit.head_dim


# --- Hugging Face Llama-family attention (grouped-query) -------------------------------------------

def _llama_matches(m: nn.Module) -> bool:
    return _linear(m, "q_proj", "k_proj", "v_proj", "o_proj") and isinstance(getattr(m, "head_dim", None), int)


def _llama_describe(m: nn.Module, name: str) -> AttentionUnit:
    d = m.head_dim
    n_q, n_kv = m.q_proj.out_features // d, m.k_proj.out_features // d
    return AttentionUnit(name, "llama", n_kv, d, [f"{name}.{p}_proj" for p in "qkv"], f"{name}.o_proj",
                         group=n_q // n_kv)


def _llama_slices(unit: AttentionUnit, m: nn.Module) -> list:
    q = torch.arange(unit.n_head * unit.group * unit.head_dim).view(unit.n_head, -1)  # a group's query rows
    kv = torch.arange(unit.n_head * unit.head_dim).view(unit.n_head, -1)
    return [(m.q_proj.weight, 0, q), (m.k_proj.weight, 0, kv), (m.v_proj.weight, 0, kv), (m.o_proj.weight, 1, q)]


def _llama_keep(unit: AttentionUnit, m: nn.Module, heads: Tensor) -> None:
    q, kv = unit.columns(heads, unit.group * unit.head_dim), unit.columns(heads, unit.head_dim)
    m.q_proj = shrink_linear(m.q_proj, out_keep=q)
    m.k_proj, m.v_proj = shrink_linear(m.k_proj, out_keep=kv), shrink_linear(m.v_proj, out_keep=kv)
    m.o_proj = shrink_linear(m.o_proj, in_keep=q)
    for attribute, value in (("num_heads", len(heads) * unit.group), ("num_key_value_heads", len(heads))):
        if hasattr(m, attribute):  # older transformers keep the counts on the module
            setattr(m, attribute, value)


# --- Hugging Face GPT-2 attention (fused c_attn, Conv1D swapped for Conv1DLinear before tracing) --------

def _gpt2_like(m: nn.Module) -> bool:
    """A GPT-2 self-attention (fused c_attn, not cross-attention), whatever its widths."""
    return (_linear(m, "c_attn", "c_proj") and not hasattr(m, "q_attn")
            and all(isinstance(getattr(m, a, None), int) for a in ("num_heads", "head_dim", "split_size")))


def _gpt2_matches(m: nn.Module) -> bool:
    return _gpt2_like(m) and m.c_attn.out_features == 3 * m.split_size == 3 * m.num_heads * m.head_dim


def _gpt2_describe(m: nn.Module, name: str) -> AttentionUnit:
    return AttentionUnit(name, "gpt2", m.num_heads, m.head_dim, [f"{name}.c_attn"], f"{name}.c_proj")


def _gpt2_slices(unit: AttentionUnit, m: nn.Module) -> list:
    width, idx = unit.n_head * unit.head_dim, torch.arange(unit.n_head * unit.head_dim).view(unit.n_head, -1)
    return [(m.c_attn.weight, 0, torch.cat([idx, idx + width, idx + 2 * width], dim=1)), (m.c_proj.weight, 1, idx)]


def _gpt2_keep(unit: AttentionUnit, m: nn.Module, heads: Tensor) -> None:
    width, cols = unit.n_head * unit.head_dim, unit.columns(heads, unit.head_dim)
    m.c_attn = shrink_linear(m.c_attn, out_keep=torch.cat([cols, cols + width, cols + 2 * width]))
    m.c_proj = shrink_linear(m.c_proj, in_keep=cols)
    _gpt2_widths(m)


def _gpt2_widths(m: nn.Module) -> None:
    """The forward splits c_attn's output at ``split_size`` (and counts heads by ``head_dim``): both follow
    c_attn's width, after pruning and when a saved model is rebuilt with its pruned layers."""
    m.split_size = m.c_attn.out_features // 3
    m.num_heads = m.split_size // m.head_dim


def restore_widths(model: nn.Module) -> None:
    """Set the attributes attention modules keep beside their weights from their layers' widths (GPT-2's
    ``split_size``/``num_heads``), once a pruned model's layers are rebuilt at their saved shapes."""
    for m in model.modules():
        if _gpt2_like(m):
            _gpt2_widths(m)


register_unit(UnitKind("gpt", _gpt_matches, _gpt_describe, _gpt_slices, _gpt_keep))
register_unit(UnitKind("gpt2", _gpt2_matches, _gpt2_describe, _gpt2_slices, _gpt2_keep))
register_unit(UnitKind("fused", _fused_matches, _fused_describe, _gpt_slices, _fused_keep))
register_unit(UnitKind("bert", _bert_matches, _bert_describe, _bert_slices, _bert_keep))
register_unit(UnitKind("llama", _llama_matches, _llama_describe, _llama_slices, _llama_keep))


def update_config(model: nn.Module, units: list[AttentionUnit]) -> None:
    """Record uniform new widths in a Hugging Face config (feed-forward width; Llama-family head counts),
    so that the saved config describes the pruned model; non-uniform widths stay in the layers."""
    config = getattr(model, "config", None)
    if not hasattr(config, "intermediate_size"):
        return
    sizes = {model.get_submodule(u.name).intermediate.dense.out_features for u in units if u.kind == "bert"}
    sizes |= {m.gate_proj.out_features for m in model.modules() if _linear(m, "gate_proj", "up_proj", "down_proj")}
    if len(sizes) == 1:
        config.intermediate_size = sizes.pop()
    llama = {(u.n_head, u.group, u.head_dim) for u in units if u.kind == "llama"}
    if len(llama) == 1 and hasattr(config, "num_key_value_heads"):
        n_kv, group, d = llama.pop()
        config.num_attention_heads, config.num_key_value_heads, config.head_dim = n_kv * group, n_kv, d
