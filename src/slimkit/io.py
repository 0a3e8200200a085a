"""Artifacts: ``save(model, dir)`` writes model.safetensors + slimkit.json; ``load(dir)`` rebuilds.

slimkit.json records the format version, how to rebuild the architecture, every tensor's
encoding, the compression manifest, metrics, and the byte size and SHA-256 of the weights file,
so that a truncated or altered file is caught with a message naming it. ``load`` also accepts a
Hugging Face model folder (config.json + weights) and returns the transformers model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from safetensors.torch import save_file
import torch
from torch import Tensor, nn

from slimkit.errors import ArtifactError, UserInputError
from slimkit.files import read_description, read_safetensors
from slimkit.formats.sparse import decode_sparse, encode_sparse
from slimkit.manifest import get_manifest, set_manifest
from slimkit.naming import import_object

FORMAT = "slimkit-artifact"
FORMAT_VERSION = 2  # 2: sparse tensors may be stored as a bitmask or CSR (version 1 artifacts still load)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "slimkit.json"


def save(model: nn.Module, directory: str | Path, *, metrics: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed) and return the directory.

    >>> save(GPT(GPTConfig()), "out/gpt")  # doctest: +SKIP
    """
    directory = Path(directory)
    architecture = describe_architecture(model)
    tensors, aliases = _unique_tensors(model.state_dict())
    stored, encodings = _compact(tensors)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    save_file(stored, str(weights), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "tensors": {name: {"encoding": encodings.get(name, "raw"), "dtype": str(t.dtype).removeprefix("torch."),
                           "shape": list(t.shape)} for name, t in tensors.items()},
        "aliases": aliases,
        "replaced_modules": _replaced_modules(model),
        "manifest": get_manifest(model),
        # which parameters training leaves alone (e.g. a LoRA model's frozen base), restored by load
        "frozen": sorted(name for name, p in model.named_parameters() if not p.requires_grad),
        "metrics": metrics or {},
        "weights": {"file": WEIGHTS_FILE, "bytes": weights.stat().st_size, "sha256": _sha256(weights)},
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load(directory: str | Path) -> nn.Module:
    """Rebuild the model saved in ``directory`` (a slimkit artifact or a Hugging Face folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such directory; pass the folder that slimkit.save wrote")
    if not (directory / META_FILE).exists():
        if (directory / "config.json").exists():
            return _load_hf_folder(directory)
        raise ArtifactError(
            f"{directory}: neither a slimkit artifact ({META_FILE} missing) nor a Hugging Face "
            "model folder (config.json missing)"
        )
    meta = read_meta(directory)
    state = _expand(_read_weights(directory, meta), meta.get("tensors", {}), directory / WEIGHTS_FILE)
    model = build_architecture(meta["architecture"], directory / META_FILE)
    _rebuild_replaced_modules(model, meta.get("replaced_modules", {}), directory / META_FILE)
    for alias, canonical in meta.get("aliases", {}).items():
        state[alias] = state[canonical]
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{directory / WEIGHTS_FILE}: tensors do not fit the architecture: {exc}") from None
    _retie(model, meta.get("aliases", {}))
    frozen = set(meta.get("frozen", []))
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    set_manifest(model, meta.get("manifest", []))
    return model.eval()


def read_meta(directory: str | Path) -> dict:
    """The parsed slimkit.json of an artifact, checked to be one."""
    path = Path(directory) / META_FILE
    meta = read_description(path, FORMAT, "a slimkit artifact description", "this folder is not a slimkit artifact")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {meta['format_version']} is newer than this slimkit reads "
            f"({FORMAT_VERSION}); upgrade slimkit"
        )
    return meta


def artifact_bytes(directory: str | Path) -> int:
    """Total size on disk of every file in the artifact folder: the size reports quote."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def describe_architecture(model: nn.Module) -> dict:
    """How to rebuild ``model``: a transformers class + config, or a class taking a config dataclass."""
    try:
        from transformers import PreTrainedModel
    except ImportError:
        PreTrainedModel = ()  # noqa: N806 - transformers is optional
    cls = type(model)
    if PreTrainedModel and isinstance(model, PreTrainedModel):
        return {"kind": "transformers", "class": cls.__name__, "config": model.config.to_dict()}
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise UserInputError(
            f"cannot record how to rebuild {cls.__name__}: slimkit.save needs a model whose "
            "constructor takes one dataclass stored as `.config`, or a transformers model"
        )
    return {
        "kind": "python",
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config_class": f"{type(config).__module__}:{type(config).__qualname__}",
        "config": dataclasses.asdict(config),
    }


def build_architecture(architecture: dict, source: Path) -> nn.Module:
    """A freshly constructed model from a ``describe_architecture`` record."""
    try:
        if architecture["kind"] == "transformers":
            import transformers

            cls = getattr(transformers, architecture["class"])
            return cls(cls.config_class.from_dict(architecture["config"]))
        model_cls = import_object(architecture["class"])
        config = import_object(architecture["config_class"])(**architecture["config"])
        return model_cls(config)
    except ImportError as exc:
        raise ArtifactError(f"{source}: cannot rebuild the model, {exc}; install what it names") from None
    except (KeyError, AttributeError, TypeError) as exc:
        raise ArtifactError(f"{source}: the architecture record is invalid ({exc!r})") from None


def _replaced_modules(model: nn.Module) -> dict[str, dict]:
    """Modules a transform swapped in (QuantLinear, LoRA, ...) and how to rebuild each empty.

    Such a module has ``slimkit_spec() -> dict`` (JSON-serialisable) and a classmethod
    ``from_slimkit_spec(spec)`` returning a module with the right buffer shapes; the saved
    state then fills it. Only the outermost swapped module of a subtree is recorded.
    """
    records: dict[str, dict] = {}
    for name, module in model.named_modules():
        if hasattr(module, "slimkit_spec") and not any(name.startswith(f"{r}.") for r in records):
            cls = type(module)
            records[name] = {"class": f"{cls.__module__}:{cls.__qualname__}", "spec": module.slimkit_spec()}
    return records


def _rebuild_replaced_modules(model: nn.Module, records: dict[str, dict], source: Path) -> None:
    for name, record in records.items():
        try:
            module = import_object(record["class"]).from_slimkit_spec(record["spec"])
            model.set_submodule(name, module)
        except (ImportError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: cannot rebuild module {name!r}: {exc!r}") from None


def _unique_tensors(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier one (tied weights); return the aliases."""
    seen: dict[tuple, str] = {}
    tensors, aliases = {}, {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous()
    return tensors, aliases


def _compact(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Sparse float tensors as bitmask/CSR parts named ``"<name>::<part>"`` (formats/sparse.py); the rest as is."""
    stored, encodings = {}, {}
    for name, tensor in tensors.items():
        compact = encode_sparse(tensor)
        if compact is None:
            stored[name] = tensor
            continue
        encodings[name] = compact[0]
        stored.update({f"{name}::{part}": t for part, t in compact[1].items()})
    return stored, encodings


def _expand(stored: dict[str, Tensor], described: dict[str, dict], path: Path) -> dict[str, Tensor]:
    """The dense state dict back from what ``_compact`` stored."""
    state = {name: t for name, t in stored.items() if "::" not in name}
    for name, info in described.items():
        if info.get("encoding", "raw") == "raw":
            continue
        prefix = f"{name}::"
        parts = {key[len(prefix):]: t for key, t in stored.items() if key.startswith(prefix)}
        try:
            dtype = getattr(torch, info["dtype"])
            state[name] = decode_sparse(info["encoding"], parts, info["shape"], dtype)
        except (KeyError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{path}: tensor {name!r} ({info.get('encoding')}) cannot be decoded: {exc!r}") from None
    return state


def _retie(model: nn.Module, aliases: dict[str, str]) -> None:
    """Make aliased parameters the same object again, as they were when saved."""
    for alias, canonical in aliases.items():
        owner_name, _, leaf = alias.rpartition(".")
        owner = model.get_submodule(owner_name)
        setattr(owner, leaf, model.get_parameter(canonical) if canonical in dict(model.named_parameters())
                else model.get_buffer(canonical))


def _read_weights(directory: Path, meta: dict) -> dict[str, Tensor]:
    path = directory / WEIGHTS_FILE
    if not path.exists():
        raise ArtifactError(f"{path}: missing; the artifact is incomplete")
    expected = meta.get("weights", {})
    size = path.stat().st_size
    if "bytes" in expected and size != expected["bytes"]:
        raise ArtifactError(f"{path}: {size} bytes, expected {expected['bytes']}; the file is truncated or was replaced")
    if "sha256" in expected and _sha256(path) != expected["sha256"]:
        raise ArtifactError(f"{path}: checksum mismatch; the file is corrupt or was changed after saving")
    return read_safetensors(path, "the artifact is incomplete")


def _load_hf_folder(directory: Path) -> nn.Module:
    try:
        from transformers import AutoModel
    except ImportError:
        raise ArtifactError(
            f"{directory}: a Hugging Face model folder, which needs transformers: pip install transformers"
        ) from None
    try:
        return AutoModel.from_pretrained(directory, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory}: cannot load as a Hugging Face model folder: {exc}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
