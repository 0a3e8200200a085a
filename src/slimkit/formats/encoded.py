"""EncodedTensor: one quantized tensor (packed codes, scales, zero points, format and layout)."""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from slimkit.errors import ArtifactError
from slimkit.formats.codec import decode
from slimkit.formats.doublequant import dequantize_scales
from slimkit.formats.layout import GRANULARITIES, from_blocks, from_rows, make_grid, to_blocks
from slimkit.formats.packing import load_codes, packed_nbytes
from slimkit.formats.registry import FORMAT_NAMES, format_bits

_META_KEYS = ("fmt", "shape", "granularity", "axis", "group_size", "symmetric")
_TENSOR_KEYS = ("codes", "scale", "zero_point", "scale_codes", "scale_scale", "scale_offset")


@dataclass
class EncodedTensor:
    """A tensor quantized by `slimkit.formats.quantize`.

    Fields: `codes` are the packed uint8 codes in row order (see layout.py); `scale` (float32) and
    `zero_point` (uint8, asymmetric int only) have shape (rows, groups). With double quantization
    `scale` is None and `scale_codes` (uint8 (rows*groups,)), `scale_scale` (float32 per 256 scales)
    and `scale_offset` (float32 (1,)) hold it instead. fp16/bf16/tf32 store no scale at all.

    Example:
        >>> from slimkit.formats import quantize
        >>> enc = quantize(torch.randn(8, 64), "int4", group_size=32)
        >>> enc.bits_per_element()
        5.0
    """

    fmt: str
    shape: tuple[int, ...]
    granularity: str  # "tensor" | "channel" | "group"
    axis: int | None
    group_size: int | None
    symmetric: bool
    codes: Tensor
    scale: Tensor | None
    zero_point: Tensor | None
    scale_codes: Tensor | None = None
    scale_scale: Tensor | None = None
    scale_offset: Tensor | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def scales(self) -> Tensor | None:
        """The first-level scales (rows, groups), rebuilt from their codes when double-quantized."""
        if self.scale_codes is None:
            return None if self.scale is None else self.scale.float()
        grid = make_grid(self.shape, self.granularity, self.axis, self.group_size)
        return dequantize_scales(self.scale_codes, self.scale_scale, self.scale_offset, (grid.rows, grid.groups))

    def dequantize(self) -> Tensor:
        """float32 tensor of `self.shape`."""
        codes = load_codes(self.codes, format_bits(self.fmt), self.numel)
        scale = self.scales()
        if scale is None:
            return decode(codes, self.fmt, torch.ones((), device=codes.device)).reshape(self.shape)
        grid = make_grid(self.shape, self.granularity, self.axis, self.group_size)
        blocks = to_blocks(codes.reshape(grid.rows, grid.row_len), grid)  # (rows, groups, group_size)
        zero_point = None if self.zero_point is None else self.zero_point.float()[..., None]
        values = decode(blocks, self.fmt, scale[..., None], zero_point)
        return from_rows(from_blocks(values, grid), self.shape, self.axis)

    def dequantize_rows(self, index: Tensor) -> Tensor:
        """float32 rows ``index`` (any shape of row numbers along axis 0) of a 2-D tensor, decoding
        only those rows: an embedding lookup on codes. Needs per-channel or group layout on axis 0
        and rows that fill whole bytes; otherwise it dequantizes everything and indexes.

        Example:
            >>> from slimkit.formats import quantize
            >>> enc = quantize(torch.randn(10, 8), "int4", group_size=4)
            >>> torch.equal(enc.dequantize_rows(torch.tensor([3, 1])), enc.dequantize()[[3, 1]])
            True
        """
        bits = format_bits(self.fmt)
        grid = make_grid(self.shape, self.granularity, self.axis, self.group_size)
        if len(self.shape) != 2 or self.axis != 0 or bits > 8 or (grid.row_len * bits) % 8:
            return self.dequantize()[index]
        flat = index.reshape(-1)
        row_bytes = grid.row_len * bits // 8
        codes = load_codes(self.codes.view(grid.rows, row_bytes)[flat].reshape(-1), bits, flat.numel() * grid.row_len)
        picked = make_grid((flat.numel(), grid.row_len), self.granularity, 0, self.group_size)
        blocks = to_blocks(codes.reshape(flat.numel(), grid.row_len), picked)  # (n, groups, group_size)
        zero_point = None if self.zero_point is None else self.zero_point[flat].float()[..., None]
        values = decode(blocks, self.fmt, self.scales()[flat][..., None], zero_point)
        return from_blocks(values, picked).reshape(*index.shape, grid.row_len)

    def tensors(self) -> dict[str, Tensor]:
        """The stored tensors by field name (None fields left out)."""
        return {key: getattr(self, key) for key in _TENSOR_KEYS if getattr(self, key) is not None}

    def nbytes(self) -> int:
        """Bytes of every stored tensor."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def bits_per_element(self) -> float:
        """Stored bits per element of the original tensor (0.0 for an empty tensor)."""
        return self.nbytes() * 8 / self.numel if self.numel else 0.0

    def meta(self) -> dict:
        """JSON-serialisable description: everything but the tensors."""
        meta = {key: getattr(self, key) for key in _META_KEYS}
        meta["shape"] = list(self.shape)
        return meta

    @classmethod
    def from_parts(cls, meta: dict, tensors: dict[str, Tensor]) -> "EncodedTensor":
        """Rebuild from `meta()` and `tensors()`; ArtifactError if they do not describe one.

        Example:
            >>> from slimkit.formats import quantize
            >>> enc = quantize(torch.randn(4, 8), "nf4", group_size=8)
            >>> EncodedTensor.from_parts(enc.meta(), enc.tensors()).meta() == enc.meta()
            True
        """
        _check_parts(meta, tensors)
        values = {key: meta[key] for key in _META_KEYS}
        values["shape"] = tuple(int(size) for size in meta["shape"])
        values.update({key: tensors.get(key) for key in _TENSOR_KEYS})
        return cls(**values)


def _check_parts(meta: dict, tensors: dict[str, Tensor]) -> None:
    missing = [key for key in _META_KEYS if key not in meta] + [key for key in ("codes",) if key not in tensors]
    unknown = sorted(set(tensors) - set(_TENSOR_KEYS))
    if missing or unknown:
        raise ArtifactError(f"encoded tensor is missing {missing} or has unknown parts {unknown}")
    if not ((meta["axis"] is None or _is_count(meta["axis"], -8))
            and (meta["group_size"] is None or _is_count(meta["group_size"], 1))
            and isinstance(meta["symmetric"], bool) and isinstance(meta["shape"], (list, tuple))
            and all(_is_count(size) for size in meta["shape"])):
        raise ArtifactError(f"encoded tensor has a malformed shape, axis, group_size or symmetric ({meta!r:.200})")
    if meta["fmt"] not in FORMAT_NAMES or meta["granularity"] not in GRANULARITIES:
        raise ArtifactError(f"encoded tensor has unknown format '{meta['fmt']}' or granularity '{meta['granularity']}'")
    expected = packed_nbytes(math.prod(meta["shape"]), format_bits(meta["fmt"]))
    if tensors["codes"].numel() != expected:
        raise ArtifactError(
            f"encoded tensor of shape {meta['shape']} in {meta['fmt']} needs {expected} code bytes, "
            f"found {tensors['codes'].numel()}"
        )


def _is_count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least
