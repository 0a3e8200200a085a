"""What every technique config shares: one ``to_dict``/``from_dict`` with a ``version``, old key names
accepted on input, unknown keys refused with one message naming them.

A config is a frozen dataclass that inherits ``Config`` and names itself in ``WHAT``::

    @dataclass(frozen=True)
    class LowRankConfig(Config):
        WHAT: ClassVar[str] = "low-rank"
        ALIASES: ClassVar[dict] = {"targets": "include"}  # old name -> field
        rank: int | None = None

>>> LowRankConfig.from_dict({"rank": 8, "version": 1}).rank  # doctest: +SKIP
8
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import ClassVar

from slimkit.errors import UserInputError

VERSION = 1  # version of the config dictionaries written by to_dict; a dict without one is older and still loads


def plain(value):
    """A config value as plain data (tuples as lists, values with ``to_plain`` as what it returns)."""
    if hasattr(value, "to_plain"):
        return value.to_plain()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of the technique configs: ``to_dict``/``from_dict`` written once.

    version: the version of the config vocabulary (keyword-only, last); a dict from an older slimkit
        loads with its old key names translated. WHAT names the config in messages ("unknown low-rank
        setting(s) ..."). ALIASES maps old key names to the field that replaced them.
    """

    WHAT: ClassVar[str] = "config"
    ALIASES: ClassVar[dict[str, str]] = {}
    version: int = dataclasses.field(default=VERSION, kw_only=True)

    def to_dict(self) -> dict:
        return {name: plain(getattr(self, name)) for name in field_names(type(self))}

    @classmethod
    def from_dict(cls, data: dict):
        return build_config(cls, data, cls.WHAT)


def canonical(cls, data: dict) -> dict:
    """``data`` with old key names renamed to their fields; the ``version`` it was written with is checked
    and dropped (the config built from it has the current vocabulary)."""
    written = data.get("version", VERSION)
    if not isinstance(written, int) or written > VERSION:
        raise UserInputError(f"config version {written!r} is newer than this slimkit reads ({VERSION}); upgrade slimkit")
    aliases = getattr(cls, "ALIASES", {})
    renamed = {aliases.get(k, k): v for k, v in data.items() if k != "version"}
    both = [k for k in data if k in aliases and aliases[k] in data]
    if both:
        raise UserInputError(f"{both[0]!r} is the old name of {aliases[both[0]]!r}; give one of them")
    return renamed


def field_names(cls) -> list[str]:
    """The dataclass fields of ``cls`` in order, ``version`` last."""
    names = [f.name for f in dataclasses.fields(cls)]
    return [n for n in names if n != "version"] + [n for n in names if n == "version"]


def accepted_keys(cls) -> set[str]:
    """The keys a config dict may hold: its fields, the old names its constructor still takes (InitVars),
    and the old names in its ALIASES."""
    return set(inspect.signature(cls).parameters) | set(getattr(cls, "ALIASES", {}))


def build_config(cls, data: dict, what: str):
    """``cls(**data)``, refusing keys that are not fields of the dataclass ``cls`` with one message naming them.

    >>> build_config(TrainConfig, {"steps": 10, "lr": 1e-3}, "training")  # doctest: +SKIP
    """
    data = canonical(cls, data)
    known = field_names(cls)
    unknown = sorted(set(data) - set(accepted_keys(cls)))
    if unknown:
        raise UserInputError(f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**data)
