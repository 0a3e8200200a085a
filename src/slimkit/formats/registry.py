"""The names of the number formats and how many bits each code takes."""

from slimkit.errors import UserInputError
from slimkit.formats.minifloat import MINIFLOATS

INT_BITS = {f"int{bits}": bits for bits in range(2, 9)}

FORMAT_NAMES: tuple[str, ...] = (
    *INT_BITS,
    "nf4",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp4_e2m1",
    "fp16",
    "bf16",
    "tf32",
    "binary",
    "ternary",
)

# Stored as-is, no scale: the format's own exponent covers the range.
UNSCALED = ("fp16", "bf16", "tf32")

_OTHER_BITS = {"nf4": 4, "binary": 1, "ternary": 2}


def check_format(fmt: str) -> None:
    """Raise UserInputError unless `fmt` is one of FORMAT_NAMES.

    Example:
        >>> check_format("int4")
    """
    if fmt not in FORMAT_NAMES:
        raise UserInputError(f"unknown format '{fmt}'; valid formats: {', '.join(FORMAT_NAMES)}")


def format_bits(fmt: str) -> int:
    """Bits per code of `fmt` (tf32 counts its 19 significant bits).

    Example:
        >>> format_bits("nf4"), format_bits("tf32")
        (4, 19)
    """
    check_format(fmt)
    if fmt in INT_BITS:
        return INT_BITS[fmt]
    if fmt in MINIFLOATS:
        return MINIFLOATS[fmt].bits
    return _OTHER_BITS[fmt]


def is_scaled(fmt: str) -> bool:
    """Whether `fmt` stores codes relative to a scale (everything but fp16, bf16, tf32)."""
    check_format(fmt)
    return fmt not in UNSCALED
