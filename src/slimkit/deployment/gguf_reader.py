"""Reading a GGUF file's header with every count and length checked against the file's size.

A GGUF file is untrusted input: a claimed tensor count of 2^63, a string longer than the file, or a
tensor reaching past the end would otherwise mean a hang or a huge allocation. Each is an
ArtifactError naming the file and the problem before anything that size is read.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from slimkit.errors import ArtifactError
from slimkit.formats.ggml import TYPES

# value type id -> (struct format, size) for the fixed-size types (ggml docs/gguf.md)
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
            7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
STRING, ARRAY = 8, 9
# ggml type -> (block elements, block bytes) for the types slimkit reads (formats/ggml.py)
TYPE_SIZES = {kind: (weights, size) for kind, (_, weights, size) in TYPES.items()}
TYPE_NAMES = {kind: name for kind, (name, _, _) in TYPES.items()}
MAX_DIMS = 4


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first)
    ggml_type: int
    offset: int  # from the start of the file
    nbytes: int


class _Cursor:
    def __init__(self, data, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ArtifactError(f"{self.path}: {what} runs past the end of the file ({len(self.data)} bytes); "
                                "the file is truncated or corrupt")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def scalar(self, kind: int, what: str):
        fmt, size = _SCALARS[kind]
        return struct.unpack(fmt, self.take(size, what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar(10, what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{self.path}: {what} is not UTF-8 text; the file is corrupt") from None

    def value(self, kind: int, what: str):
        if kind in _SCALARS:
            return self.scalar(kind, what)
        if kind == STRING:
            return self.string(what)
        if kind == ARRAY:
            item, count = self.scalar(4, what), self.scalar(10, what)
            least = _SCALARS[item][1] if item in _SCALARS else 8  # a string takes at least its length
            if count * least > len(self.data) - self.pos:
                raise ArtifactError(f"{self.path}: {what} claims {count} elements, more than the file holds")
            return [self.value(item, what) for _ in range(count)]
        raise ArtifactError(f"{self.path}: {what} has unknown value type {kind}; the file is corrupt or newer "
                            "than GGUF version 3")


_KIND_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 10: "u64", 11: "i64",
               12: "f64", STRING: "str"}


def read_gguf(path: str | Path, kinds: dict | None = None) -> tuple[dict, dict[str, TensorInfo], mmap.mmap]:
    """(metadata, tensor infos by name, the mapped file) of a GGUF file; ArtifactError if it is not a sound one.

    ``kinds``, when given, is filled with each key's value type as slimkit's writer names it ("u32", "str",
    "i32[]", ...; arrays of arrays as None)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read ({exc})") from None
    cursor = _Cursor(data, path)
    if cursor.take(4, "the magic number") != b"GGUF":
        raise ArtifactError(f"{path}: not a GGUF file (no 'GGUF' magic number)")
    version = cursor.scalar(4, "the version")
    if version not in (2, 3):
        raise ArtifactError(f"{path}: GGUF version {version}; slimkit reads versions 2 and 3")
    tensors, kvs = cursor.scalar(10, "the tensor count"), cursor.scalar(10, "the key-value count")
    # each key-value takes at least 8 + 4 bytes, each tensor info at least 8 + 4 + 4 + 8 bytes
    if kvs * 12 + tensors * 24 > len(data):
        raise ArtifactError(f"{path}: claims {tensors} tensors and {kvs} metadata entries, more than its "
                            f"{len(data)} bytes can hold; the header is corrupt")
    meta = {}
    for _ in range(kvs):
        key = cursor.string("a metadata key")
        kind = cursor.scalar(4, f"metadata {key!r}")
        if kind == ARRAY and kinds is not None:  # the element type, read ahead without moving the cursor
            item = struct.unpack_from("<I", cursor.data, cursor.pos)[0] if cursor.pos + 4 <= len(cursor.data) else None
            kinds[key] = f"{_KIND_NAMES[item]}[]" if item in _KIND_NAMES else None
        elif kinds is not None:
            kinds[key] = _KIND_NAMES.get(kind)
        meta[key] = cursor.value(kind, f"metadata {key!r}")
    infos = [_tensor_info(cursor, path) for _ in range(tensors)]
    alignment = meta.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise ArtifactError(f"{path}: general.alignment {alignment!r} is not a power of two")
    start = math.ceil(cursor.pos / alignment) * alignment
    out = {}
    for name, shape, kind, offset in infos:
        info = TensorInfo(name, shape, kind, start + offset, _nbytes(shape, kind, name, path))
        if info.offset + info.nbytes > len(data):
            raise ArtifactError(f"{path}: tensor {name!r} reaches past the end of the file; it is truncated")
        out[name] = info
    return meta, out, data


def _tensor_info(cursor: _Cursor, path: Path) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string("a tensor name")
    dims = cursor.scalar(4, f"tensor {name!r}'s dimension count")
    if not 1 <= dims <= MAX_DIMS:
        raise ArtifactError(f"{path}: tensor {name!r} has {dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}")
    shape = tuple(reversed([cursor.scalar(10, f"tensor {name!r}'s shape") for _ in range(dims)]))
    return name, shape, cursor.scalar(4, f"tensor {name!r}'s type"), cursor.scalar(10, f"tensor {name!r}'s offset")


def _nbytes(shape: tuple[int, ...], kind: int, name: str, path: Path) -> int:
    if kind not in TYPE_SIZES:
        raise ArtifactError(f"{path}: tensor {name!r} has ggml type {kind}; slimkit reads "
                            f"{', '.join(TYPE_NAMES.values())}")
    block, size = TYPE_SIZES[kind]
    if shape[-1] % block:
        raise ArtifactError(f"{path}: tensor {name!r} rows of {shape[-1]} are not whole {TYPE_NAMES[kind]} blocks")
    return math.prod(shape) // block * size
