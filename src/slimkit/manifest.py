"""The compression manifest: what every transform did to which layer, kept on the model itself.

Each transform appends one entry per layer it touched or skipped, e.g.
``{"layer": "fc1", "technique": "rtn", "format": "int4", "bits_per_weight": 4.5}`` or
``{"layer": "head", "technique": "rtn", "skipped": "output layer kept in fp32"}``.
``slimkit.save`` writes the manifest into ``slimkit.json`` and ``slimkit.load`` restores it.
"""

from __future__ import annotations

import copy

from torch import nn

_ATTR = "_slimkit_manifest"


def get_manifest(model: nn.Module) -> list[dict]:
    """Return a copy of the model's manifest (empty for a model no transform has touched)."""
    return copy.deepcopy(getattr(model, _ATTR, []))


def add_entry(model: nn.Module, entry: dict) -> None:
    """Append one entry to the model's manifest; ``entry`` must name the ``layer`` and ``technique``."""
    for key in ("layer", "technique"):
        if key not in entry:
            raise ValueError(f"manifest entry {entry!r} lacks the required key {key!r}")
    entries = getattr(model, _ATTR, [])
    entries.append(dict(entry))
    # object.__setattr__ keeps nn.Module from treating the list as a submodule or buffer.
    object.__setattr__(model, _ATTR, entries)


def set_manifest(model: nn.Module, entries: list[dict]) -> None:
    """Replace the model's manifest (used by ``slimkit.load``)."""
    object.__setattr__(model, _ATTR, copy.deepcopy(list(entries)))
