"""Block-wise 8-bit code-book quantization (Dettmers et al., "8-bit Optimizers via Block-wise
Quantization", 2022): a flat tensor is cut into blocks, each block is divided by its absmax and
every value is replaced by the index of the nearest entry of a 256-entry code book in [-1, 1].

Code books: ``dynamic`` (dynamic tree quantization, built as bitsandbytes' ``create_dynamic_map``)
and ``linear`` (bitsandbytes' ``create_linear_map``), each signed or unsigned.

Example:
    >>> x = torch.randn(1000)
    >>> book = code_book("dynamic", signed=True)
    >>> codes, absmax = blockwise_encode(x, book, block_size=256)
    >>> codes.dtype, absmax.shape
    (torch.uint8, torch.Size([4]))
    >>> bool((blockwise_decode(codes, absmax, book, 256) - x).abs().max() < 0.05)
    True
"""

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from slimkit.errors import UserInputError
from slimkit.formats.reduce import safe_scale

CODE_BOOKS = ("dynamic", "linear")
BLOCK_SIZES = (256, 2048)


def dynamic_map(signed: bool) -> Tensor:
    """The 256-entry dynamic tree code book, sorted, as bitsandbytes' ``create_dynamic_map``.

    A run of e = 0..6 zero bits after the sign bit scales by 10^-e; the bits left after the next
    (indicator) bit split the linear range [0.1, 1] into equal bins whose midpoints are the
    fractions. The unsigned book spends the sign bit on one more fraction bit. 0 and 1 complete it.

    Example:
        >>> book = dynamic_map(signed=True)
        >>> book.shape, book[0] < -0.99, book[-1].item()
        (torch.Size([256]), tensor(True), 1.0)
    """
    data: list[float] = []
    for e in range(7):
        fraction_count = 2 ** (6 - e if signed else 7 - e)
        # float32 linspace and midpoints: the arithmetic behind bitsandbytes' table.
        boundaries = torch.linspace(0.1, 1, fraction_count + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        scale = 10**-e
        data += (scale * means).tolist()
        if signed:
            data += (-scale * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def linear_map(signed: bool) -> Tensor:
    """256 evenly spaced codes, as bitsandbytes' ``create_linear_map``: unsigned [0, 1]; signed
    [-1, 1] with 255 steps so that 0 is a code, the spare slot holding a second 0.

    Example:
        >>> linear_map(signed=False)[[0, 255]]
        tensor([0., 1.])
    """
    if not signed:
        return torch.linspace(0.0, 1.0, 256)
    values = torch.linspace(-1.0, 1.0, 255)
    return torch.cat([values[:127], torch.zeros(1), values[127:]])


@dataclass(frozen=True, eq=False)
class CodeBook:
    """A sorted (256,) float32 code book, the midpoints between neighbouring codes (255,) and a
    lookup table that finds the nearest code fast on CPU (see ``nearest``)."""

    values: Tensor
    midpoints: Tensor
    table: Tensor  # (cells,) int64: midpoints below each cell's first key
    first_cell: int

    @classmethod
    def from_values(cls, values: Tensor) -> "CodeBook":
        """Build the midpoints and the lookup table of a sorted (256,) float32 book."""
        midpoints = (values[1:] + values[:-1]) / 2
        cells = torch.arange(_ordered_key(torch.tensor(-1.0)).item() >> _SHIFT,
                             (_ordered_key(torch.tensor(1.0)).item() >> _SHIFT) + 1)
        keys = _ordered_key(midpoints).long()
        table = torch.searchsorted(keys, cells << _SHIFT)  # midpoints with a key below the cell
        if (torch.searchsorted(keys, (cells + 1) << _SHIFT) - table).max() > 1:
            raise ValueError("code book too dense for the lookup table: two midpoints share a cell")
        # a +inf sentinel: the comparison in `nearest` may look one past the last midpoint
        return cls(values, torch.cat([midpoints, torch.full((1,), torch.inf)]), table, int(cells[0]))

    def nearest(self, normalised: Tensor) -> Tensor:
        """uint8 index of the code nearest to each float32 value in [-1, 1] (a tie: the lower).

        Equal to ``torch.bucketize(normalised, midpoints)``: the table gives the count of
        midpoints below the value's cell, and a cell holds at most one midpoint, so one comparison
        finishes the count. On CPU that is about 8x faster than bucketize's binary search.
        """
        if normalised.device.type != "cpu":
            midpoints = on_device(self.midpoints, normalised.device)[:-1]
            return torch.bucketize(normalised, midpoints).to(torch.uint8)
        # index_select, not [], for the look-ups: several times faster on CPU
        flat = normalised.reshape(-1)
        cell = (_ordered_key(flat) >> _SHIFT).long().sub_(self.first_cell).clamp_(0, len(self.table) - 1)
        below = self.table.index_select(0, cell)
        codes = below.add_(flat > self.midpoints.index_select(0, below)).to(torch.uint8)
        return codes.view(normalised.shape)


_DEVICE_COPIES: dict[tuple[int, str], Tensor] = {}


def on_device(table: Tensor, device: torch.device) -> Tensor:
    """``table`` (a small module-level constant: a code book's values or midpoints, a 4-bit code table)
    on ``device``, copied there once: a host-to-device copy on every call would stall the GPU's queue
    (an 8-bit AdamW step would copy four tables per parameter)."""
    if table.device == device:
        return table
    key = (id(table), str(device))
    if key not in _DEVICE_COPIES:
        _DEVICE_COPIES[key] = table.to(device)
    return _DEVICE_COPIES[key]


# Cells of 2^15 float32 ulps are 0.4% of a value wide: narrower than any gap between midpoints.
_SHIFT = 15


def _ordered_key(x: Tensor) -> Tensor:
    """int32 keys that sort as the float32 values do (negative floats have their order flipped)."""
    bits = x.float().contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@lru_cache(maxsize=None)
def code_book(name: str, signed: bool) -> CodeBook:
    """The code book called ``name`` (``dynamic`` or ``linear``), signed or unsigned.

    Example:
        >>> code_book("dynamic", signed=False).values[-1].item()
        1.0
    """
    if name == "dynamic":
        return CodeBook.from_values(dynamic_map(signed))
    if name == "linear":
        return CodeBook.from_values(linear_map(signed))
    raise UserInputError(f"unknown code book {name!r}; choose one of {', '.join(CODE_BOOKS)}")


def check_block_size(block_size: int) -> None:
    """Raise UserInputError unless ``block_size`` is one of BLOCK_SIZES."""
    if block_size not in BLOCK_SIZES:
        raise UserInputError(
            f"block_size={block_size!r} is not supported; use {' or '.join(map(str, BLOCK_SIZES))}"
        )


def _blocks(x: Tensor, block_size: int) -> Tensor:
    """Flat float32 view of ``x`` as (blocks, block_size), the last block padded with zeros."""
    flat = x.reshape(-1).float()
    pad = -flat.numel() % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block_size)


def blockwise_encode(x: Tensor, book: CodeBook, block_size: int = 256) -> tuple[Tensor, Tensor]:
    """(codes, absmax): uint8 codes shaped like ``x`` (nearest entry of ``book`` to x / absmax
    of its block; a tie goes to the lower code) and float32 absmax (blocks,).

    Example:
        >>> codes, absmax = blockwise_encode(torch.tensor([0.5, -1.0]), code_book("linear", True))
        >>> codes.tolist(), absmax.tolist()
        ([191, 0], [1.0])
    """
    blocks = _blocks(x, block_size)  # (blocks, block_size)
    absmax = safe_scale(blocks.abs().amax(dim=1))  # (blocks,)
    codes = book.nearest(blocks / absmax[:, None])
    return codes.view(-1)[: x.numel()].view(x.shape), absmax


def blockwise_decode(codes: Tensor, absmax: Tensor, book: CodeBook, block_size: int = 256) -> Tensor:
    """float32 book.values[codes] * absmax of each block, shaped like ``codes``."""
    values = on_device(book.values, codes.device).index_select(0, codes.reshape(-1).long())
    values = _blocks(values, block_size)  # (blocks, block_size)
    return (values * absmax[:, None]).view(-1)[: codes.numel()].view(codes.shape)
