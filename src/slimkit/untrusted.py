"""Reading files that anyone may have written: bounded JSON, a checked safetensors header, a bounded build.

Every check here raises ``ArtifactError`` naming the file and the field, before anything is allocated:
JSON is parsed with limits on size, nesting and number length; a safetensors header is parsed and its
offsets, dtypes and shapes checked against the file; a model described by a file is constructed under
``build_budget``, which stops the construction once it registers more elements or modules than the
file can fill.
"""

from __future__ import annotations

import json
import math
import struct
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.nn.modules import module as module_hooks

from slimkit.errors import ArtifactError

MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 32  # slimkit's own descriptions nest at most ~10 deep
MAX_NUMBER_CHARS = 40
MAX_HEADER_BYTES = 100 << 20
MAX_DIM = 1 << 40
# safetensors dtype codes and the torch dtype names slimkit.json records for them
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def parse_json(data: bytes, path: Path) -> object:
    """The JSON value in ``data`` (read from ``path``) with bounded size, nesting and number length."""
    if len(data) > MAX_JSON_BYTES:
        raise ArtifactError(f"{path}: {len(data)} bytes, more than the {MAX_JSON_BYTES} a description may have")

    def number(text: str, kind):
        if len(text) > MAX_NUMBER_CHARS:
            raise ArtifactError(f"{path}: a number of {len(text)} characters; the file is corrupt or hostile")
        return kind(text)

    def constant(name: str):
        raise ArtifactError(f"{path}: {name} is not a JSON number; the file is corrupt")

    try:
        value = json.loads(data.decode("utf-8"), parse_int=lambda t: number(t, int),
                           parse_float=lambda t: number(t, float), parse_constant=constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); the file is corrupt or truncated") from None
    except RecursionError:
        raise ArtifactError(f"{path}: JSON nested too deeply; the file is corrupt or hostile") from None
    check_depth(value, path)
    return value


def read_quantized_config(directory: Path) -> tuple[dict, dict]:
    """A foreign checkpoint folder's config.json, parsed with the same bounds as slimkit's own descriptions:
    (the config without its quantization_config, the quantization_config); ArtifactError otherwise."""
    path = Path(directory) / "config.json"
    try:
        data = parse_json(path.read_bytes(), path)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("quantization_config"), dict):
        raise ArtifactError(f"{path}: expected a JSON object with a quantization_config object")
    quant = data.pop("quantization_config")
    return data, quant


def check_depth(value: object, path: Path) -> None:
    """ArtifactError when ``value`` nests lists/objects more than MAX_DEPTH deep (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ArtifactError(f"{path}: JSON nested more than {MAX_DEPTH} deep; the file is corrupt or hostile")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


def safetensors_header(data: bytes, path: Path, size: int | None = None) -> dict[str, dict]:
    """{name: {"dtype": torch dtype name, "shape": [...]}} of the safetensors file ``data``, every entry
    checked: known dtype, sane shape, byte range inside the file and matching dtype x shape, no overlaps.

    ``size``: the file's size when ``data`` holds only its beginning (at least the header)."""
    size = len(data) if size is None else size
    if size < 8 or len(data) < 8:
        raise ArtifactError(f"{path}: {size} bytes, too short for a safetensors file; the file is truncated")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, size - 8) or len(data) < 8 + length:
        raise ArtifactError(f"{path}: header claims {length} bytes, the file has {size}; truncated or corrupt")
    header = parse_json(data[8:8 + length], path)
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    body = size - 8 - length
    tensors, spans = {}, []
    for name, entry in header.items():
        where = f"{path}: tensor {name[:100]!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or entry["dtype"] not in DTYPES:
            raise ArtifactError(f"{where}: unknown dtype or malformed entry")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        check_shape(shape, where)
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            raise ArtifactError(f"{where}: byte range {offsets!r} outside the file; truncated or corrupt")
        if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[entry["dtype"]]:
            raise ArtifactError(f"{where}: {offsets[1] - offsets[0]} bytes do not hold {entry['dtype']} {shape}")
        spans.append(tuple(offsets))
        tensors[name] = {"dtype": DTYPES[entry["dtype"]], "shape": shape}
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise ArtifactError(f"{path}: tensors overlap in the file; it is corrupt or hostile")
    return tensors


def check_shape(shape: object, where: str) -> None:
    """ArtifactError unless ``shape`` is a list of at most 8 non-negative ints, each below MAX_DIM."""
    if (not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and 0 <= d < MAX_DIM for d in shape)
            or math.prod(shape) >= MAX_DIM):
        raise ArtifactError(f"{where}: shape {str(shape)[:80]} is not a valid tensor shape")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@contextmanager
def build_budget(elements: int, modules: int, path: Path):
    """Stop a model construction described by ``path`` once it registers more than ``elements`` tensor
    elements or ``modules`` modules (a description claiming sizes its weights file cannot fill);
    construction runs on the meta device, so nothing is allocated while it is checked."""
    count = {"elements": 0, "modules": 0}

    def tensor_hook(module, name, tensor):
        if tensor is not None:
            count["elements"] += tensor.numel()
            if count["elements"] > elements:
                raise ArtifactError(f"{path}: the described model has more than {elements} elements, more than "
                                    "its weights file can fill; the description is corrupt or hostile")

    def module_hook(module, name, submodule):
        count["modules"] += 1
        if count["modules"] > modules:
            raise ArtifactError(f"{path}: the described model has more than {modules} modules for the tensors "
                                "its weights file holds; the description is corrupt or hostile")

    handles = [module_hooks.register_module_parameter_registration_hook(tensor_hook),
               module_hooks.register_module_buffer_registration_hook(tensor_hook),
               module_hooks.register_module_module_registration_hook(module_hook)]
    try:
        with torch.device("meta"):
            yield
    finally:
        for handle in handles:
            handle.remove()
