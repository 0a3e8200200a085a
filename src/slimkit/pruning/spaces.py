"""Channel spaces: the channels one layer's output opens, and where they flow (typed values of the graph).

A ``Space`` is one Linear/Conv2d output's channels; spaces united by a residual add or an elementwise
product form one group (same size, the same indices kept). A ``Layout`` lists the ``Segment``s a
tensor's channel dimension is made of; ``Use`` records a module that reads (or normalises) a segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Use(NamedTuple):
    """``module`` reads channels [start, start + length) of a space at its input offset ``offset``."""

    module: str
    offset: int
    start: int
    length: int


@dataclass
class Space:
    """One Linear/Conv2d output's channels; united spaces form a group (same size, same indices kept)."""

    size: int
    producers: list[str] = field(default_factory=list)  # modules whose output rows are these channels
    channelwise: list[Use] = field(default_factory=list)  # BatchNorm, depthwise: as consumers
    consumers: list[Use] = field(default_factory=list)
    blocked: str | None = None
    parent: Space | None = None

    def root(self) -> Space:
        return self if self.parent is None else self.parent.root()


class Segment(NamedTuple):
    """Channels [start, start + length) of ``space`` (None: fixed channels no layer opened)."""

    space: Space | None
    start: int
    length: int


Layout = list  # [Segment] along the channel dimension


def slice_layout(layout: Layout, start: int, length: int) -> Layout:
    """The segments covering channels [start, start + length) of ``layout``."""
    out, offset = [], 0
    for space, s, n in layout:
        lo, hi = max(start, offset), min(start + length, offset + n)
        if lo < hi:
            out.append(Segment(space, s + lo - offset, hi - lo))
        offset += n
    return out


def unite(a: Layout, b: Layout) -> bool:
    """Unite the spaces of two layouts that line up segment by segment, whole spaces only."""
    if len(a) != len(b):
        return False
    for (sa, sta, na), (sb, stb, nb) in zip(a, b):
        if sa is None or sb is None or na != nb or sta or stb or na != sa.size or nb != sb.size:
            return False
    for (sa, _, _), (sb, _, _) in zip(a, b):
        ra, rb = sa.root(), sb.root()
        if ra is not rb:
            rb.parent = ra
            ra.producers += rb.producers
            ra.channelwise += rb.channelwise
            ra.consumers += rb.consumers
            ra.blocked = ra.blocked or rb.blocked
    return True


@dataclass(frozen=True)
class Tracked:
    """A graph value whose dimension ``dim`` carries prunable channels laid out as ``layout``."""

    dim: int
    layout: Layout


@dataclass(frozen=True)
class Pieces:
    """A tuple-valued graph value (split/chunk results, a module returning a tuple): one layout per
    item along ``dim``, None for an item with no tracked channels."""

    dim: int
    pieces: list

    def item(self, index: int) -> Tracked | None:
        piece = self.pieces[index]
        return Tracked(self.dim, piece) if piece else None
