"""Where a ModelShape comes from: a Hugging Face config.json, a live module, a preset or a bare
parameter count."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from slimkit.errors import UserInputError
from slimkit.memory.presets import PRESETS, ModelShape, preset

# Key names of the three config families, in the order tried: GPT-2, LLaMA/Mistral, BERT.
_KEYS = {
    "n_layer": ("n_layer", "num_hidden_layers"),
    "hidden": ("n_embd", "hidden_size"),
    "n_head": ("n_head", "num_attention_heads"),
    "n_kv_head": ("num_key_value_heads",),
    "intermediate": ("n_inner", "intermediate_size"),
    "vocab": ("vocab_size",),
    "positions": ("n_positions", "max_position_embeddings", "block_size"),
}
_DROPOUT_KEYS = ("resid_pdrop", "hidden_dropout_prob", "attention_dropout", "dropout")


def shape_of(spec: str | dict | nn.Module | int) -> ModelShape:
    """A ModelShape from a preset name, a config.json path (or its folder), a config dict, a live
    module or a parameter count.

    >>> shape_of("llama-2-70b").kv_heads
    8
    """
    if isinstance(spec, nn.Module):
        return from_module(spec)
    if isinstance(spec, dict):
        return from_hf_config(spec)
    if isinstance(spec, int):
        return from_params(spec)
    if spec in PRESETS:
        return preset(spec)
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserInputError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json or a "
                             "folder holding one")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: not a readable JSON config ({exc})") from None
    return from_hf_config(config, name=path.parent.name or path.name)


def from_hf_config(config: dict, name: str | None = None) -> ModelShape:
    """ModelShape of a transformers ``config.json`` (GPT-2, LLaMA-style or BERT key names).

    >>> from_hf_config({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
    ...                 "vocab_size": 50257, "n_positions": 1024}).n_params()
    124439808
    """
    values = {field: next((config[k] for k in keys if config.get(k) is not None), None)
              for field, keys in _KEYS.items()}
    missing = [field for field in ("n_layer", "hidden", "n_head", "vocab") if values[field] is None]
    if missing:
        raise UserInputError(f"config {name or config.get('model_type', '?')!r} lacks {', '.join(missing)} "
                             f"(looked for {', '.join(k for f in missing for k in _KEYS[f])})")
    kind = config.get("model_type", "")
    llama_like = "hidden_act" in config and config["hidden_act"] in ("silu", "swish")
    gpt2_like = kind == "gpt2" or "n_embd" in config
    dropout = any(config.get(k, 0) for k in _DROPOUT_KEYS)
    return ModelShape(
        name=name or kind or "config",
        n_layer=values["n_layer"], hidden=values["hidden"], n_head=values["n_head"],
        n_kv_head=None if values["n_kv_head"] == values["n_head"] else values["n_kv_head"], intermediate=values["intermediate"] or 4 * values["hidden"],
        vocab=values["vocab"], mlp="swiglu" if llama_like else "gelu",
        norm="rmsnorm" if llama_like else "layernorm",
        positions=0 if llama_like else values["positions"] or 0,
        tied=config.get("tie_word_embeddings", not llama_like), bias=not llama_like,
        fused_qkv=gpt2_like, dropout=bool(dropout))


def from_module(model: nn.Module) -> ModelShape:
    """ModelShape of a live module, read from its ``config``: a transformers config, or a dataclass with
    config.json's key names (slimkit's reference GPT: n_layer, n_embd, n_head, vocab_size, block_size);
    any other module keeps its exact parameter count and gets a GPT-like shape of that size (see
    ``from_params``)."""
    params = sum(p.numel() for p in model.parameters())
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    if isinstance(config, dict) and all(any(k in config for k in _KEYS[f]) for f in ("n_layer", "hidden", "n_head")):
        return from_hf_config(config, name=type(model).__name__).replace(params=params)
    return from_params(params, name=type(model).__name__)


def from_params(params: int, name: str | None = None) -> ModelShape:
    """A GPT-like shape with ``params`` parameters, for when only the count is known.

    Depth and width follow the GPT-3 family's aspect (h = 128 L, 12 L h^2 parameters; 175B gives
    L = 96, h = 12288), heads of width 128, a 50257-token vocabulary.

    >>> from_params(175_000_000_000).n_layer
    96
    """
    if params < 1:
        raise UserInputError(f"--params {params}: must be a positive parameter count, e.g. 7e9")
    n_layer = max(1, round((params / (12 * 128**2)) ** (1 / 3)))
    hidden = 128 * n_layer
    return ModelShape(name or f"{params / 1e9:.3g}B params", n_layer, hidden, max(1, hidden // 128), 4 * hidden,
                      50257, tied=True, params=params)
