"""How a tensor is cut into the blocks that share one scale.

Every granularity views the tensor as rows, then cuts each row into groups:

- "tensor": one row (the whole tensor, flattened), one group.
- "channel": one row per index along `axis` (that axis moved first, the rest flattened in order),
  one group per row.
- "group": the same rows, cut into groups of `group_size` consecutive elements. A Linear weight
  (out, in) with axis=0 gets groups along `in` within each output row, as GPTQ/AWQ do. When
  `group_size` does not divide the row length, the last group of each row is shorter and its scale
  comes from its own elements only.

Scales and zero points have shape (rows, groups); codes are stored in row order.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from slimkit.errors import UserInputError
from slimkit.formats.codec import qparams

GRANULARITIES = ("tensor", "channel", "group")


@dataclass(frozen=True)
class _Ungrouped:
    """A granularity without groups: a whole row (or the whole tensor) shares one scale."""

    kind: ClassVar[str]
    group_size: ClassVar[None] = None

    def group_len(self, row_len: int) -> int:
        """Elements sharing one scale in a row of ``row_len``: the whole row."""
        return row_len

    def to_plain(self) -> str:
        return self.kind


@dataclass(frozen=True)
class PerTensor(_Ungrouped):
    """One scale for the whole tensor."""

    kind: ClassVar[str] = "tensor"


@dataclass(frozen=True)
class PerChannel(_Ungrouped):
    """One scale per output channel (row)."""

    kind: ClassVar[str] = "channel"


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``group_size`` consecutive elements of a row (input features of a Linear weight)."""

    group_size: int
    kind: ClassVar[str] = "group"

    def __post_init__(self) -> None:
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise UserInputError(f"group_size must be a positive whole number, got {self.group_size!r}; "
                                 "64 or 128 are usual")

    def group_len(self, row_len: int) -> int:
        return self.group_size

    def to_plain(self) -> str:
        return f"group:{self.group_size}"


Granularity = PerTensor | PerChannel | PerGroup


def as_granularity(value) -> Granularity:
    """A Granularity from itself, its plain form ("tensor", "channel", "group:128"), or an old group size
    (an int: groups of that size; None: per channel).

    >>> as_granularity(128), as_granularity(None), as_granularity("group:64")
    (PerGroup(group_size=128), PerChannel(), PerGroup(group_size=64))
    """
    if isinstance(value, (PerTensor, PerChannel, PerGroup)):
        return value
    if value is None or value == "channel":
        return PerChannel()
    if value == "tensor":
        return PerTensor()
    if isinstance(value, int) and not isinstance(value, bool):
        return PerGroup(value)
    if isinstance(value, str) and value.startswith("group:") and value[6:].isdigit():
        return PerGroup(int(value[6:]))
    raise UserInputError(f"granularity {value!r}: give 'tensor', 'channel', 'group:N' (e.g. group:128), "
                         "or PerTensor()/PerChannel()/PerGroup(n)")


@dataclass(frozen=True)
class Grid:
    """Rows, row length, group length and groups per row of a tensor under one granularity.

    Example:
        >>> make_grid((4, 100), "group", 0, 64)
        Grid(rows=4, row_len=100, group_size=64, groups=2)
    """

    rows: int
    row_len: int
    group_size: int
    groups: int


def make_grid(shape: tuple[int, ...], granularity: str, axis: int | None, group_size: int | None) -> Grid:
    """The Grid of `shape`; `axis` must already be non-negative (None for "tensor")."""
    if granularity == "tensor":
        numel = math.prod(shape)
        return Grid(rows=1, row_len=numel, group_size=numel, groups=1)
    rows = shape[axis]
    row_len = math.prod(shape[:axis] + shape[axis + 1 :])
    if granularity == "channel":
        return Grid(rows=rows, row_len=row_len, group_size=row_len, groups=1)
    return Grid(rows=rows, row_len=row_len, group_size=group_size, groups=math.ceil(row_len / group_size))


def check_layout(x: Tensor, granularity: str, axis: int, group_size: int) -> int | None:
    """Validate the layout arguments for `x`; returns `axis` made non-negative (None for "tensor")."""
    if granularity not in GRANULARITIES:
        raise UserInputError(f"unknown granularity '{granularity}'; valid: {', '.join(GRANULARITIES)}")
    if granularity == "tensor":
        return None
    if not -x.dim() <= axis < x.dim():
        raise UserInputError(
            f"axis {axis} is out of range for a tensor of shape {tuple(x.shape)}; "
            f"pick an axis in [{-x.dim()}, {x.dim() - 1}] or granularity='tensor'"
        )
    if granularity == "group" and (not isinstance(group_size, int) or group_size < 1):
        raise UserInputError(f"group_size must be a positive integer, got {group_size!r}; 64 or 128 are usual")
    return axis % x.dim()


def to_rows(x: Tensor, grid: Grid, axis: int | None) -> Tensor:
    """(rows, row_len) view of `x`: `axis` moved first and the rest flattened."""
    moved = x if axis is None else x.movedim(axis, 0)
    return moved.reshape(grid.rows, grid.row_len)


def from_rows(rows: Tensor, shape: tuple[int, ...], axis: int | None) -> Tensor:
    """Inverse of `to_rows`."""
    if axis is None:
        return rows.reshape(shape)
    moved_shape = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return rows.reshape(moved_shape).movedim(0, axis)


def to_blocks(rows: Tensor, grid: Grid) -> Tensor:
    """(rows, groups, group_size), the short last group zero-padded."""
    padding = grid.groups * grid.group_size - grid.row_len
    return F.pad(rows, (0, padding)).reshape(grid.rows, grid.groups, grid.group_size)


def from_blocks(blocks: Tensor, grid: Grid) -> Tensor:
    """Inverse of `to_blocks`: (rows, row_len), padding dropped."""
    return blocks.reshape(grid.rows, grid.groups * grid.group_size)[:, : grid.row_len]


def block_qparams(rows: Tensor, fmt: str, grid: Grid, symmetric: bool) -> tuple[Tensor, Tensor | None]:
    """Scale and zero point (rows, groups) of each group, a short last group from its own elements.

    Example:
        >>> scale, _ = block_qparams(torch.ones(2, 5), "int8", Grid(2, 5, 4, 2), True)
        >>> scale.shape
        torch.Size([2, 2])
    """
    whole = min(grid.row_len // grid.group_size, grid.groups) if grid.group_size else 0
    split = whole * grid.group_size
    parts = [rows[:, :split].reshape(grid.rows, whole, grid.group_size)]
    if grid.groups > whole:
        parts.append(rows[:, split:].reshape(grid.rows, 1, grid.row_len - split))
    stats = [qparams(part, fmt, symmetric=symmetric, dim=2) for part in parts]  # each (rows, n, 1)
    scale = torch.cat([s for s, _ in stats], dim=1).squeeze(2)
    if stats[0][1] is None:
        return scale, None
    return scale, torch.cat([z for _, z in stats], dim=1).squeeze(2)
