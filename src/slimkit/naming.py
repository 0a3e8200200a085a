"""Names: the closest names for an error message, which names share a tensor, and objects by dotted name."""

from __future__ import annotations

import difflib
import importlib
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


def import_object(path: str):
    """The object named ``"package.module:Qualified.name"`` (how artifacts record the classes to rebuild)."""
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
