"""Checking an artifact's slimkit.json before anything is built from it, and its integrity digest.

``check_description`` holds every field to its type and limits and every tensor record to the
safetensors header (names, dtypes, shapes, sparse parts); ``build_config`` builds a recorded config
only through an allow-listed class's own constructor, with keys and values checked against its fields;
``digest`` is the one SHA-256 over the canonical JSON (which records the weights' SHA-256).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from pathlib import Path

from slimkit.errors import ArtifactError
from slimkit.untrusted import DTYPES, MAX_DIM, check_shape

SPARSE_PARTS = {"bitmask": {"mask", "values"}, "csr": {"crow", "col", "values"}}
_NAME = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
MAX_SHARDS = 10_000
ALGORITHM = "sha256 of the canonical description"
_FIELDS = {"format": str, "format_version": int, "architecture": dict, "tensors": dict, "aliases": dict,
           "replaced_modules": dict, "manifest": list, "frozen": list, "masks": dict, "metrics": dict,
           "weights": dict, "integrity": dict}
# transformers config keys that choose code to run (remote code, kernels from the Hub, quantizers)
_HF_REFUSED = {"auto_map", "quantization_config", "attn_implementation", "trust_remote_code", "custom_pipelines"}


def canonical(meta: dict) -> bytes:
    """The bytes the digest covers: ``meta`` without its ``integrity`` entry, keys sorted, no spaces."""
    body = {k: v for k, v in meta.items() if k != "integrity"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def digest(meta: dict) -> str:
    return hashlib.sha256(canonical(meta)).hexdigest()


def check_description(meta: dict, header: dict[str, dict], weights_bytes: int, path: Path) -> None:
    """ArtifactError naming the field of ``meta`` that is malformed, out of limits or disagrees with ``header``."""
    for key, kind in _FIELDS.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ArtifactError(f"{path}: field {key!r} should be a {kind.__name__}")
    for key in ("architecture", "tensors", "weights"):
        if key not in meta:
            raise ArtifactError(f"{path}: field {key!r} is missing; the description is incomplete")
    tensors = meta["tensors"]
    expected: dict[str, dict | None] = {}
    dense_numel = 0
    for name, info in tensors.items():
        where = f"{path}: tensors.{_clip(name)}"
        _check_name(name, where)
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES.values():
            raise ArtifactError(f"{where}: dtype missing or not one of {', '.join(sorted(DTYPES.values()))}")
        check_shape(info.get("shape"), where)
        encoding = info.get("encoding", "raw")
        if encoding == "raw":
            expected[name] = {"dtype": info["dtype"], "shape": info["shape"]}
        elif isinstance(encoding, str) and encoding in SPARSE_PARTS:
            expected.update({f"{name}::{part}": None for part in SPARSE_PARTS[encoding]})
            dense_numel += math.prod(info["shape"])
        else:
            raise ArtifactError(f"{where}: encoding {_clip(encoding)} is not raw, bitmask or csr")
    if dense_numel > 64 * weights_bytes + (1 << 24):
        raise ArtifactError(f"{path}: sparse tensors claim {dense_numel} elements, far more than a "
                            f"{weights_bytes}-byte weights file describes; the description is corrupt or hostile")
    _check_header(expected, tensors, header, path)
    _check_names(meta, tensors, path)


def _check_header(expected: dict, tensors: dict, header: dict, path: Path) -> None:
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: tensors in the description and in the weights file differ (missing from the "
                            f"file: {[_clip(n) for n in missing[:3]]}, not described: {[_clip(n) for n in extra[:3]]})")
    for name, want in expected.items():
        got = header[name]
        if want is not None and (got["dtype"], got["shape"]) != (want["dtype"], want["shape"]):
            raise ArtifactError(f"{path}: tensor {_clip(name)} is {got['dtype']} {got['shape']} in the weights file, "
                                f"{want['dtype']} {want['shape']} in the description")
    for name, info in tensors.items():
        if info.get("encoding", "raw") == "raw":
            continue
        parts = {p: header[f"{name}::{p}"] for p in SPARSE_PARTS[info["encoding"]]}
        numel, values = math.prod(info["shape"]), parts["values"]
        rows = info["shape"][0] if len(info["shape"]) > 1 else 1
        fits = values["dtype"] == info["dtype"] and math.prod(values["shape"]) <= numel
        if info["encoding"] == "bitmask":
            fits = fits and parts["mask"]["dtype"] == "uint8" and parts["mask"]["shape"] == [-(-numel // 8)]
        else:
            fits = (fits and parts["crow"]["dtype"] == "int32" and parts["crow"]["shape"] == [rows + 1]
                    and parts["col"]["dtype"] in ("int16", "int32") and parts["col"]["shape"] == values["shape"])
        if not fits:
            raise ArtifactError(f"{path}: the {info['encoding']} parts of tensor {_clip(name)} do not fit "
                                f"{info['dtype']} {info['shape']}")


def _check_names(meta: dict, tensors: dict, path: Path) -> None:
    for alias, canonical_name in meta.get("aliases", {}).items():
        _check_name(alias, f"{path}: aliases")
        if canonical_name not in tensors or alias in tensors:
            raise ArtifactError(f"{path}: aliases.{_clip(alias)} names no stored tensor")
    for name, record in meta.get("replaced_modules", {}).items():
        _check_name(name, f"{path}: replaced_modules")
        if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
            raise ArtifactError(f"{path}: replaced_modules.{_clip(name)} needs a class and a spec object")
        check_spec(record["spec"], f"{path}: replaced_modules.{_clip(name)}.spec")
    for name, exceptions in meta.get("masks", {}).items():
        _check_name(name, f"{path}: masks")
        if not isinstance(exceptions, list) or not all(isinstance(i, int) and 0 <= i < MAX_DIM for i in exceptions):
            raise ArtifactError(f"{path}: masks.{_clip(name)} should list weight indices")
    if not all(isinstance(n, str) for n in meta.get("frozen", [])):
        raise ArtifactError(f"{path}: frozen should list parameter names")


def check_spec(value: object, where: str) -> None:
    """A module spec holds JSON scalars within limits, and every ``dtype`` in it is a known dtype name."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "dtype" and child is not None and child not in DTYPES.values():
                    raise ArtifactError(f"{at}.dtype: {_clip(child)} is not a dtype slimkit stores")
                stack.append((child, f"{at}.{_clip(key)}"))
        elif isinstance(item, list):
            stack.extend((child, at) for child in item)
        elif isinstance(item, int) and not isinstance(item, bool) and not -MAX_DIM < item < MAX_DIM:
            raise ArtifactError(f"{at}: {item} is out of range")
        elif isinstance(item, str) and len(item) > 1000:
            raise ArtifactError(f"{at}: a string of {len(item)} characters")


def build_config(config_cls: type, values: object, where: str):
    """``config_cls(**values)`` after checking every key is a field and every value fits its annotation."""
    if not dataclasses.is_dataclass(config_cls):
        raise ArtifactError(f"{where}: {config_cls.__name__} is not a config class")
    if not isinstance(values, dict):
        raise ArtifactError(f"{where}: should be an object of {config_cls.__name__} fields")
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    for key, value in values.items():
        if key not in fields:
            raise ArtifactError(f"{where}.{_clip(key)}: not a field of {config_cls.__name__} "
                                f"(fields: {', '.join(sorted(fields))})")
        if not _fits(value, hints.get(key)):
            raise ArtifactError(f"{where}.{key}: {_clip(value)} does not fit {hints.get(key)}")
    try:
        return config_cls(**values)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - the class's own validation refused the values
        raise ArtifactError(f"{where}: {config_cls.__name__} refused these values ({exc})") from None


def check_hf_config(model_cls: type, values: object, where: str) -> None:
    """A transformers config record: an object of its class's model_type, without keys that choose code."""
    if not isinstance(values, dict):
        raise ArtifactError(f"{where}: should be an object")
    # names only (transformers records where a config came from; from a GGUF also _model_name_or_path)
    names = {k for k in ("_name_or_path", "_model_name_or_path") if isinstance(values.get(k), str)}
    refused = sorted(k for k in values if k in _HF_REFUSED or (k.startswith("_") and k not in names))
    if refused:
        raise ArtifactError(f"{where}: keys {refused} choose code to run and are not accepted in an artifact")
    if values.get("model_type") != getattr(model_cls.config_class, "model_type", None):
        raise ArtifactError(f"{where}.model_type: {_clip(values.get('model_type'))} is not the model_type of "
                            f"{model_cls.__name__}")
    check_spec(values, where)


def _fits(value: object, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool or hint is str:
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and -MAX_DIM < value < MAX_DIM
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else False
    return False


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or len(name) > 500 or not _NAME.fullmatch(name):
        raise ArtifactError(f"{where}: {_clip(name)} is not a valid module or tensor name")


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_integrity(meta: dict, size: int, weights_sha256: str, path: Path) -> None:
    """The weights' SHA-256 always; from format 3 on, the digest over the description too."""
    check_file(meta["weights"], size, weights_sha256, path.with_name("model.safetensors"), path)
    if meta["format_version"] >= 3:
        check_digest(meta, path)


def check_file(recorded: dict, size: int, sha256: str, file: Path, path: Path) -> None:
    """A weights file's size and SHA-256 against its record in the description at ``path``."""
    if recorded.get("bytes") != size:
        raise ArtifactError(f"{file}: {size} bytes, expected {_clip(recorded.get('bytes'))}; the file is "
                            "truncated or was replaced")
    expected = recorded.get("sha256")
    if not isinstance(expected, str) or not _HEX64.fullmatch(expected):
        raise ArtifactError(f"{path}: the sha256 of {file.name} is missing; the weights cannot be verified "
                            "(re-save the model with slimkit.save)")
    if expected != sha256:
        raise ArtifactError(f"{file}: checksum mismatch; the file is corrupt or was "
                            "changed after saving")


def check_digest(meta: dict, path: Path) -> None:
    """The digest over the description (which records every weights file's checksum)."""
    integrity = meta.get("integrity", {})
    if integrity != {"algorithm": ALGORITHM, "sha256": digest(meta)}:
        state = "is missing" if "sha256" not in integrity else "does not match"
        raise ArtifactError(f"{path}: the integrity digest {state}: the description or weights changed after "
                            "saving. If you changed them on purpose, load with slimkit.load(dir, "
                            "check_integrity=False) and save again")


def check_shards(meta: dict, path: Path) -> list[dict]:
    """The ``weights.shards`` list of a sharded artifact (format 4), each entry checked."""
    shards = meta["weights"].get("shards")
    if not isinstance(shards, list) or not 0 < len(shards) <= MAX_SHARDS:
        raise ArtifactError(f"{path}: weights.shards should list 1 to {MAX_SHARDS} weights files")
    names = set()
    for i, shard in enumerate(shards):
        where = f"{path}: weights.shards[{i}]"
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) or not _SHARD.fullmatch(shard["file"]):
            raise ArtifactError(f"{where}: file should be named like model-00001-of-00002.safetensors")
        if not isinstance(shard.get("bytes"), int) or isinstance(shard["bytes"], bool) or shard["bytes"] < 8:
            raise ArtifactError(f"{where}: bytes should be the file's size")
        if shard["file"] in names:
            raise ArtifactError(f"{where}: {shard['file']} is listed twice")
        names.add(shard["file"])
    return shards
