"""Names: the closest names for an error message, and which names share a tensor."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from torch import nn


def closest_names(pattern: str, names: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` real names most like ``pattern``, best first, for "did you mean" messages.

    Wildcards are dropped and each name is compared over as many trailing dotted parts as the
    pattern has, so ``"*.qkvv"`` finds ``blocks.0.attn.qkv``; names that differ only in an inner
    index (``blocks.0.mlp.0``, ``blocks.1.mlp.0``) are listed once, by the one most like the pattern.

    >>> closest_names("blocks.1.mlpp", ["blocks.0.mlp", "blocks.1.mlp", "lm_head"], n=2)
    ['blocks.1.mlp', 'lm_head']
    """
    literal, depth = pattern.replace("*", "").replace("?", ""), pattern.count(".") + 1

    def score(name: str) -> float:
        return difflib.SequenceMatcher(None, literal, ".".join(name.split(".")[-depth:])).ratio()

    chosen, shapes = [], set()
    for name in sorted(names, key=score, reverse=True):
        shape = re.sub(r"(?<=\.)\d+(?=\.)", "*", name)  # an inner all-digit part indexes a block list
        if shape not in shapes:
            shapes.add(shape)
            chosen.append(name)
    return chosen[:n]


def parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """{id(parameter): every name it has}: a tied parameter (e.g. a GPT's lm_head and wte) has several."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    return owners
