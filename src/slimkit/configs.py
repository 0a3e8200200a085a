"""What every technique config shares: building one from a dict that may hold keys it does not know."""

from __future__ import annotations

import dataclasses

from slimkit.errors import UserInputError


def build_config(cls, data: dict, what: str):
    """``cls(**data)``, refusing keys that are not fields of the dataclass ``cls`` with one message naming them.

    >>> build_config(TrainConfig, {"steps": 10, "lr": 1e-3}, "training")  # doctest: +SKIP
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserInputError(f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**data)
