"""LoRAConfig: which Linear layers get low-rank adapters, of what rank, over what kind of base."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass
from typing import ClassVar

from slimkit.configs import Config, field_names
from slimkit.errors import UserInputError
from slimkit.selection import as_patterns

INITS = ("default", "gaussian")
BASES = ("float", "nf4")
DTYPES = ("float32", "bfloat16")
# --lora keys that are spelled differently from the field they set
_ALIASES = {"r": "rank", "targets": "include"}


@dataclass(frozen=True)
class LoRAConfig(Config):
    """Low-rank adapters ``W x + (alpha / rank) * B A x`` on chosen Linear layers.

    rank: inner dimension r of the adapters (A is (r, in), B is (out, r)).
    alpha: the update is scaled by alpha / rank, so changing the rank keeps its size comparable.
    dropout: dropout probability on the adapters' input (training only).
    include: fnmatch patterns over module names; empty means every Linear layer (``targets`` before
        config version 1, still accepted).
    exclude: fnmatch patterns of Linear layers to leave alone.
    init: "default" (A kaiming-uniform as peft, B zeros) or "gaussian" (A normal, std 1/rank; B zeros);
        either way the adapted model starts equal to the base.
    base: "float" (the frozen original Linear) or "nf4" (QLoRA: the frozen weight stored as NF4 codes).
    group_size: NF4 base only: weights sharing one scale.
    double_quant: NF4 base only: quantize the scales to 8 bits too (QLoRA's ~4.127 bits per weight).
    dtype: adapter dtype, "float32" or "bfloat16".

    >>> LoRAConfig.parse("r=8,alpha=16,targets=*.qkv|*.proj").include
    ('*.qkv', '*.proj')
    """

    WHAT: ClassVar[str] = "LoRA"
    ALIASES: ClassVar[dict] = {"targets": "include"}

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    init: str = "default"
    base: str = "float"
    group_size: int = 64
    double_quant: bool = True
    dtype: str = "float32"
    targets: InitVar[tuple[str, ...] | None] = None  # the old name of include, still accepted

    def __post_init__(self, targets: tuple[str, ...] | None) -> None:
        if targets is not None:
            object.__setattr__(self, "include", targets)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise UserInputError(f"LoRA rank={self.rank!r}: must be a positive whole number (8 or 16 are usual)")
        if not self.alpha > 0:
            raise UserInputError(f"LoRA alpha={self.alpha!r}: must be positive (often 2 * rank)")
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"LoRA dropout={self.dropout!r}: must lie in [0, 1)")
        for name, value, allowed in (("init", self.init, INITS), ("base", self.base, BASES),
                                     ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                raise UserInputError(f"LoRA {name}={value!r}: choose one of {', '.join(allowed)}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise UserInputError(f"LoRA group_size={self.group_size!r}: must be a positive whole number (64 in QLoRA)")
        for name in ("include", "exclude"):
            object.__setattr__(self, name, as_patterns(getattr(self, name)))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def parse(cls, text: str) -> LoRAConfig:
        """The config a ``--lora`` option describes: comma-separated key=value, lists joined by ``|``.

        >>> LoRAConfig.parse("r=16,alpha=32,dropout=0.05,base=nf4,dtype=bfloat16").rank
        16
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "version"}
        values = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = _ALIASES.get(key.strip(), key.strip())
            if not sep:
                raise UserInputError(f"--lora item {item!r} is not key=value, e.g. r=8,alpha=16,targets=*.qkv")
            if key not in fields:
                raise UserInputError(f"unknown --lora key {item.partition('=')[0]!r}; known keys: {_known_keys()}")
            values[key] = _convert(key, raw.strip(), fields[key].default)
        return cls(**values)


def _convert(key: str, raw: str, default):
    """``raw`` as the type of the field's default (tuples are ``|``-separated)."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            return tuple(p.strip() for p in raw.split("|") if p.strip())
        return type(default)(raw)
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}[type(default)]
        raise UserInputError(f"--lora {key}={raw!r}: expected {kind}") from None


def _known_keys() -> str:
    return ", ".join(["r"] + [n for n in field_names(LoRAConfig) if n != "version"] + ["targets"])
