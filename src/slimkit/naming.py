"""Module and parameter names: the closest names for an error message, and which names share a tensor."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn


def closest_names(pattern: str, names: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` names most like ``pattern`` (wildcards dropped), best first, for "did you mean" messages."""
    literal = pattern.replace("*", "").replace("?", "")
    return sorted(names, key=lambda name: difflib.SequenceMatcher(None, literal, name).ratio(), reverse=True)[:n]


def parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """{id(parameter): every name it has}: a tied parameter (e.g. a GPT's lm_head and wte) has several."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    return owners
