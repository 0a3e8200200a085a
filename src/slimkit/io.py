"""Artifacts: ``save(model, dir)`` writes model.safetensors + slimkit.json; ``load(dir)`` rebuilds.

slimkit.json records the format version, how to rebuild the architecture (allow-listed class names,
see ``slimkit.classes``), every tensor's encoding, dtype and shape, the compression manifest, metrics,
the size and SHA-256 of the weights file, and one digest over all of it. An artifact is untrusted
input: ``load`` checks the description against limits and against the weights file's header, builds
the model on the meta device under a size budget before allocating anything, and names the file and
field of every problem in an ``ArtifactError``. ``save`` writes a temporary sibling folder and swaps
it into place, so a crash leaves the old artifact or the new one. ``load`` also accepts a Hugging
Face model folder (config.json + weights) and returns the transformers model of the class the folder's
config names (``slimkit.hf``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save as dump_safetensors
import torch
from torch import Tensor, nn

from slimkit import classes, hf
from slimkit.atomic import clear_stale, locked, replacing_dir
from slimkit.description import (ALGORITHM, build_config, check_description, check_digest, check_file,
                                 check_hf_config, check_integrity, check_shards, check_spec, digest)
from slimkit.errors import ArtifactError, SlimkitError, UserInputError
from slimkit.formats.sparse import decode_sparse, encode_sparse, nonzero_bits
from slimkit.manifest import get_manifest, set_manifest
from slimkit.pruning.masks import attach_mask, masks
from slimkit.pruning.units import restore_widths
from slimkit.untrusted import MAX_HEADER_BYTES, build_budget, parse_json, safetensors_header

FORMAT = "slimkit-artifact"
# 2: sparse tensors as bitmask or CSR; 3: class names from the allow-list, one digest over description
# and weights. Versions 1 and 2 still load (weights checksum required, description not covered).
FORMAT_VERSION = 3
SHARDED_VERSION = 4  # 4: the weights in several files (``saving``); single-file artifacts are still written as 3
WEIGHTS_FILE = "model.safetensors"
SHARD_FILES = "model-*-of-*.safetensors"
META_FILE = "slimkit.json"
ARTIFACT_FILES = (WEIGHTS_FILE, META_FILE, SHARD_FILES)
OWNED_FILES = ARTIFACT_FILES + hf.COMPANIONS  # every file ``save`` may write into an artifact folder
_warned_unsigned: set[str] = set()


def save(model: nn.Module, directory: str | Path, *, metrics: dict | None = None,
         init_args: dict | None = None, companions: str | Path | None = None) -> Path:
    """Write ``model`` to ``directory`` (replacing an artifact there, atomically) and return the directory.

    The model's class must be one ``load`` may rebuild (``slimkit.classes``): a slimkit model, a
    transformers model, or a class registered with ``slimkit.register_class``. A registered class
    without a dataclass ``.config`` is rebuilt from ``init_args``: JSON constructor (or factory) arguments.
    ``companions``: a Hugging Face folder (or an artifact made from one) whose config, tokenizer and
    generation config are copied beside the artifact (``slimkit.hf.COMPANIONS``); by default the one
    the model was loaded from.

    >>> save(GPT(GPTConfig()), "out/gpt")  # doctest: +SKIP
    """
    with saving(directory) as writer:
        writer.finish(model, metrics=metrics, init_args=init_args, companions=companions)
    return Path(directory)


@contextmanager
def saving(directory: str | Path) -> Iterator[ArtifactWriter]:
    """An ``ArtifactWriter`` into a temporary folder that replaces ``directory`` atomically after ``finish``.

    For a model that never sits whole in memory: store each finished part as its own shard, drop it,
    and finish with the rest (``slimkit.quantization.layerwise.quantize_folder_to`` does this).

    >>> with saving("out/big") as writer:  # doctest: +SKIP
    ...     for i, layer in enumerate(layers):
    ...         writer.write_part(f"model.layers.{i}", layer)  # then drop the layer's tensors
    ...     writer.finish(model)  # the model without those layers' tensors
    """
    directory = Path(directory)
    with locked(directory), replacing_dir(clear_stale(directory), owned=OWNED_FILES) as tmp:
        writer = ArtifactWriter(tmp, directory)
        yield writer
        if not writer.finished:
            raise RuntimeError(f"nothing was saved to {directory}: ArtifactWriter.finish was not called")


class ArtifactWriter:
    """Writes one artifact's files into a folder. Without parts: model.safetensors (format 3). With
    parts (``write_part``, each a submodule's tensors stored at once): one shard per part plus one
    for the rest, ``model-00001-of-000NN.safetensors`` ..., each with its size and SHA-256 in
    slimkit.json (format 4). Tensors tied across parts are stored once per part."""

    def __init__(self, folder: Path, directory: Path) -> None:
        self._folder, self._directory = folder, directory
        self._shards: list[dict] = []  # {"file", "bytes", "sha256"}, in order
        self._prefixes: list[str] = []
        self._records: dict = {"tensors": {}, "aliases": {}, "replaced_modules": {}, "frozen": [], "masks": {}}
        self.finished = False

    def write_part(self, name: str, module: nn.Module) -> None:
        """Store the tensors of ``module``, the submodule ``name`` of the model, as one shard now."""
        prefix = f"{name}."
        if any(prefix.startswith(p) or p.startswith(prefix) for p in self._prefixes):
            raise ValueError(f"part {name!r} overlaps a part already written")
        weights = self._record(module, prefix)
        file = f"part-{len(self._shards)}"  # renamed model-...-of-... once the count is known
        (self._folder / file).write_bytes(weights)
        self._shards.append({"file": file, "bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()})
        self._prefixes.append(prefix)

    def finish(self, model: nn.Module, *, metrics: dict | None = None, init_args: dict | None = None,
               companions: str | Path | None = None) -> None:
        """Store ``model``'s tensors outside the parts already written and the description."""
        architecture = describe_architecture(model, init_args)
        files, source = hf.provenance(model)  # a Hugging Face model's folder travels with it
        companions = companions if companions is not None else files
        weights = self._record(model, "")
        records = self._records
        meta = {
            "format": FORMAT,
            "format_version": SHARDED_VERSION if self._shards else FORMAT_VERSION,
            "architecture": architecture,
            **{key: records[key] for key in ("tensors", "aliases", "replaced_modules", "masks")},
            "manifest": get_manifest(model),
            # which parameters training leaves alone (e.g. a LoRA model's frozen base), restored by load
            "frozen": sorted(records["frozen"]),
            "metrics": {**source, **(metrics or {})},
            "weights": self._write_weights(weights),
        }
        try:
            meta = json.loads(json.dumps(meta, allow_nan=False))  # the digest covers exactly what load parses
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"cannot save to {self._directory}: metrics and records must be finite JSON "
                                 f"values ({exc})") from None
        meta["integrity"] = {"algorithm": ALGORITHM, "sha256": digest(meta)}
        (self._folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if companions is not None:
            hf.copy_companions(companions, self._folder)
        self.finished = True

    def _write_weights(self, weights: bytes) -> dict:
        if not self._shards:
            (self._folder / WEIGHTS_FILE).write_bytes(weights)
            return {"file": WEIGHTS_FILE, "bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
        last = "part-last"
        (self._folder / last).write_bytes(weights)
        shards = [*self._shards, {"file": last, "bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}]
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            (self._folder / shard["file"]).rename(self._folder / name)
            shard["file"] = name
        return {"shards": shards}

    def _record(self, module: nn.Module, prefix: str) -> bytes:
        """Describe ``module``'s tensors (named ``prefix`` + name) not in a written part; their safetensors bytes."""
        def new(name: str) -> bool:
            return not any(name.startswith(p) for p in self._prefixes)

        tensors, aliases = _unique_tensors({prefix + k: v for k, v in module.state_dict().items() if new(prefix + k)})
        stored, encodings = _compact(tensors)
        records = self._records
        records["tensors"].update({name: {"encoding": encodings.get(name, "raw"),
                                          "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                                   for name, t in tensors.items()})
        records["aliases"].update(aliases)
        replaced, masked = _replaced_modules(module), _masks(module)
        records["replaced_modules"].update({prefix + n: r for n, r in replaced.items() if new(prefix + n)})
        records["frozen"] += [prefix + n for n, p in module.named_parameters()
                              if not p.requires_grad and new(prefix + n)]
        records["masks"].update({prefix + n: r for n, r in masked.items() if new(prefix + n)})
        return dump_safetensors(stored, metadata={"format": FORMAT})


def load(directory: str | Path, *, check_integrity: bool = True) -> nn.Module:
    """Rebuild the model saved in ``directory`` (a slimkit artifact or a Hugging Face folder).

    ``check_integrity=False`` skips the checksum and digest (only for an artifact you changed on purpose,
    to save it again); every other check still applies. Every failure is an ArtifactError (a SlimkitError).
    """
    try:
        return _load(Path(directory), check_integrity)
    except SlimkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file is untrusted input: whatever slipped past the checks
        reason = " ".join(str(exc).split())[:200]
        raise ArtifactError(f"{directory}: cannot be loaded ({type(exc).__name__}: {reason}); the artifact is "
                            "corrupt or was not written by slimkit") from None


def _load(directory: Path, check_integrity: bool) -> nn.Module:
    from slimkit.deployment.imports import importer_for  # GGUF files, compressed-tensors folders

    importer = importer_for(directory)
    if importer is not None:
        return importer(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such directory; pass the folder that slimkit.save wrote")
    if not (directory / META_FILE).exists():
        if (directory / "config.json").exists():
            return hf.load_folder(directory)
        raise ArtifactError(
            f"{directory}: neither a slimkit artifact ({META_FILE} missing) nor a Hugging Face "
            "model folder (config.json missing)"
        )
    # every file is read through one handle on the folder, so all come from the same save even while
    # another save swaps a new folder in (retried when that save removed the old one)
    for attempt in range(3):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return _load_at(directory, fd, check_integrity)
        except FileNotFoundError as exc:
            if attempt == 2:
                raise ArtifactError(f"{directory / str(exc.filename)}: missing; the artifact is incomplete") from None
        except OSError as exc:
            raise ArtifactError(f"{directory}: cannot be read ({exc.strerror})") from None
        finally:
            os.close(fd)
    raise AssertionError("unreachable")


def _load_at(directory: Path, fd: int, check_integrity: bool) -> nn.Module:
    path = directory / META_FILE
    meta = parse_meta(_read_at(fd, META_FILE), path)
    files = _weights_files(meta, fd, directory, check_integrity)
    header, total = {}, 0
    for name, (file_header, size, _) in files.items():
        clash = next((t for t in file_header if t in header), None)
        if clash is not None:
            raise ArtifactError(f"{directory / name}: tensor {clash[:100]!r} is also in another weights file")
        header.update(file_header)
        total += size
    check_description(meta, header, total, path)
    with build_budget(64 * total + (1 << 24), 16 * len(header) + 256, path):
        _check_built(_build(meta, path), meta, path)
    stored: dict[str, Tensor] = {}
    for name, (file_header, _, read) in files.items():
        stored.update(_parse_weights(read(), directory / name))  # one file's bytes at a time
    state = _expand(stored, meta["tensors"], directory / WEIGHTS_FILE)
    model = _build_unfilled(meta, path)
    aliases = meta.get("aliases", {})
    for alias, canonical in aliases.items():
        state[alias] = state[canonical]
    model.load_state_dict(state, strict=True, assign=True)
    _retie(model, aliases)
    frozen = set(meta.get("frozen", []))
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    _attach_masks(model, meta.get("masks", {}), path)
    set_manifest(model, meta.get("manifest", []))
    hf.remember_source(model, directory, meta.get("metrics", {}).get("source"))
    return model.eval()


def _weights_files(meta: dict, fd: int, directory: Path, check_integrity: bool) -> dict[str, tuple]:
    """{file name: (its checked header, its size, a function returning its checked bytes)}."""
    path = directory / META_FILE
    if meta["format_version"] < SHARDED_VERSION:
        weights = _read_at(fd, WEIGHTS_FILE)
        if check_integrity:
            check_integrity_of(meta, weights, path)
        return {WEIGHTS_FILE: (safetensors_header(weights, directory / WEIGHTS_FILE), len(weights), lambda: weights)}
    if not isinstance(meta.get("weights"), dict):
        raise ArtifactError(f"{path}: field 'weights' is missing; the weights cannot be verified")
    if check_integrity:
        check_digest(meta, path)  # the description records every shard's checksum
    files = {}
    for shard in check_shards(meta, path):
        name, file = shard["file"], directory / shard["file"]
        with open(name, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=fd)) as f:
            size = os.fstat(f.fileno()).st_size
            length = f.read(8)
            head = length + f.read(min(MAX_HEADER_BYTES, int.from_bytes(length, "little")))  # checked below
        header = safetensors_header(head, file, size)

        def read(shard=shard, file=file, header=header) -> bytes:
            data = _read_at(fd, shard["file"])
            if check_integrity:
                check_file(shard, len(data), hashlib.sha256(data).hexdigest(), file, path)
            if safetensors_header(data, file) != header:
                raise ArtifactError(f"{file}: changed while it was being loaded")
            return data

        files[name] = (header, size, read)
    return files


def read_meta(directory: str | Path) -> dict:
    """The parsed slimkit.json of an artifact, checked to be one (its weights are not read)."""
    path = Path(directory) / META_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; this folder is not a slimkit artifact") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_meta(data, path)


def parse_meta(data: bytes, path: Path) -> dict:
    """slimkit.json's bytes as a dict, checked to be a slimkit description of a version this slimkit reads."""
    meta = parse_json(data, path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a slimkit artifact description (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{path}: format_version {str(version)[:20]} is not a version number; the file is corrupt")
    if version > SHARDED_VERSION:
        raise ArtifactError(f"{path}: format version {version} is newer than this slimkit reads "
                            f"({SHARDED_VERSION}); upgrade slimkit")
    return meta


def check_integrity_of(meta: dict, weights: bytes, path: Path) -> None:
    """Checksum of the weights (always) and the digest of the description (format 3)."""
    if not isinstance(meta.get("weights"), dict):
        raise ArtifactError(f"{path}: field 'weights' is missing; the weights cannot be verified "
                            "(re-save the model with slimkit.save)")
    check_integrity(meta, len(weights), hashlib.sha256(weights).hexdigest(), path)
    if meta["format_version"] < 3 and str(path) not in _warned_unsigned:
        _warned_unsigned.add(str(path))
        warnings.warn(f"{path}: a format {meta['format_version']} artifact: its weights are verified, its "
                      "description is not; re-save it (slimkit.save(slimkit.load(dir), new_dir)) to cover both",
                      stacklevel=6)


def artifact_bytes(directory: str | Path) -> int:
    """Total size on disk of every file in the artifact folder: the size reports quote."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def describe_architecture(model: nn.Module, init_args: dict | None = None) -> dict:
    """How to rebuild ``model``: an allow-listed class and its config (or constructor arguments)."""
    name = classes.class_name(type(model))
    if classes.is_transformers_model(model):
        return {"kind": "transformers", "class": name, "config": model.config.to_dict()}
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and init_args is None:
        return {"kind": "python", "class": name, "config_class": classes.class_name(type(config)),
                "config": dataclasses.asdict(config)}
    if init_args is None:
        raise UserInputError(
            f"cannot record how to rebuild {type(model).__name__}: pass init_args= (its constructor's or "
            "registered factory's JSON arguments), or give it one dataclass config stored as `.config`")
    return {"kind": "init_args", "class": name, "init_args": init_args}


def build_architecture(architecture: object, source: Path) -> nn.Module:
    """A freshly constructed model from a ``describe_architecture`` record (allow-listed classes only)."""
    if not isinstance(architecture, dict) or architecture.get("kind") not in ("python", "transformers", "init_args"):
        raise ArtifactError(f"{source}: architecture.kind should be python, transformers or init_args")
    entry = classes.resolve(architecture.get("class"), f"{source}: architecture.class")
    if architecture["kind"] == "transformers":
        if not classes.is_transformers_model_class(entry.cls):
            raise ArtifactError(f"{source}: architecture.class {entry.cls.__name__} is not a transformers model")
        check_hf_config(entry.cls, architecture.get("config"), f"{source}: architecture.config")
        make = lambda: entry.cls(entry.cls.config_class.from_dict(architecture["config"]))  # noqa: E731
    elif architecture["kind"] == "python":
        config_cls = classes.resolve(architecture.get("config_class"), f"{source}: architecture.config_class").cls
        config = build_config(config_cls, architecture.get("config"), f"{source}: architecture.config")
        make = lambda: (entry.factory or entry.cls)(config)  # noqa: E731
    else:
        args = architecture.get("init_args")
        if not isinstance(args, dict):
            raise ArtifactError(f"{source}: architecture.init_args should be an object")
        check_spec(args, f"{source}: architecture.init_args")
        make = lambda: (entry.factory or entry.cls)(**args)  # noqa: E731
    model = classes.construct(make, f"{source}: architecture ({entry.cls.__name__})")
    if not isinstance(model, entry.cls):
        raise ArtifactError(f"{source}: the factory registered for {entry.cls.__name__} built a {type(model).__name__}")
    return model


def _build(meta: dict, path: Path) -> nn.Module:
    model = build_architecture(meta["architecture"], path)
    _rebuild_replaced_modules(model, meta.get("replaced_modules", {}), path)
    restore_widths(model)  # a pruned GPT-2 attention's split width follows its rebuilt c_attn
    return model


def _build_unfilled(meta: dict, path: Path) -> nn.Module:
    """``_build`` for loading: a transformers model's constructor allocates its float weights without
    filling them (untouched pages cost no memory) since the stored tensors replace every one, so a
    quantized model loads in about its stored size, not its float size."""
    if meta["architecture"].get("kind") != "transformers":
        return _build(meta, path)  # slimkit's and registered models: small, built as they are
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return _build(meta, path)


def _check_built(model: nn.Module, meta: dict, path: Path) -> None:
    """The (meta-device) model's state dict has exactly the described tensors, with their dtypes and shapes."""
    state = model.state_dict()
    tensors, aliases = meta["tensors"], meta.get("aliases", {})
    described = set(tensors) | set(aliases)
    if set(state) != described:
        missing, extra = sorted(set(state) - described), sorted(described - set(state))
        raise ArtifactError(f"{path.with_name(WEIGHTS_FILE)}: tensors do not fit the architecture (missing "
                            f"{missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():
        info = tensors[aliases.get(name, name)]
        if str(tensor.dtype).removeprefix("torch.") != info["dtype"] or list(tensor.shape) != info["shape"]:
            raise ArtifactError(f"{path.with_name(WEIGHTS_FILE)}: tensor {name!r} is {info['dtype']} {info['shape']}, "
                                f"the architecture needs {str(tensor.dtype).removeprefix('torch.')} "
                                f"{list(tensor.shape)}")
    params = dict(model.named_parameters())
    unknown = [n for n in meta.get("frozen", []) if n not in params]
    if unknown:
        raise ArtifactError(f"{path}: frozen names parameters the model does not have ({unknown[:3]})")


def _replaced_modules(model: nn.Module) -> dict[str, dict]:
    """Modules a transform swapped in (QuantLinear, LoRA, ...) and how to rebuild each empty.

    Such a module has ``slimkit_spec() -> dict`` (JSON-serialisable) and a classmethod
    ``from_slimkit_spec(spec)`` returning a module with the right buffer shapes; the saved
    state then fills it. Only the outermost swapped module of a subtree is recorded.
    """
    records: dict[str, dict] = {}
    for name, module in model.named_modules():
        if hasattr(module, "slimkit_spec") and not any(name.startswith(f"{r}.") for r in records):
            records[name] = classes.spec_record(module)
    return records


def _rebuild_replaced_modules(model: nn.Module, records: dict[str, dict], source: Path) -> None:
    for name, record in records.items():
        module = classes.from_spec_record(record, f"{source}: replaced_modules.{name}")
        try:
            model.set_submodule(name, module)
        except (AttributeError, TypeError) as exc:
            raise ArtifactError(f"{source}: replaced_modules names {name!r}, which the model lacks ({exc})") from None


def _masks(model: nn.Module) -> dict[str, list[int]]:
    """Pruning masks still attached (training after this load must keep the zeros), as {module: exceptions}.

    A mask is the weight's non-zero pattern, so only the flat indices of kept weights that are exactly
    +0.0 need recording (almost never any): the artifact grows by nothing.
    """
    records = {}
    for name, keep in masks(model).items():
        weight = model.get_submodule(name).weight.detach().masked_fill(~keep, 0)
        records[name] = (keep & ~nonzero_bits(weight)).flatten().nonzero().flatten().tolist()
    return records


def _attach_masks(model: nn.Module, records: dict[str, list[int]], path: Path) -> None:
    for name, exceptions in records.items():
        try:
            weight = model.get_submodule(name).weight
            keep = nonzero_bits(weight.detach())
            keep.view(-1)[torch.tensor(exceptions, dtype=torch.long)] = True
            attach_mask(model.get_submodule(name), keep)
        except (AttributeError, IndexError, KeyError, TypeError, RuntimeError) as exc:
            raise ArtifactError(f"{path}: masks.{name} does not fit the model ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:150]})") from None


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
    """The dense state dict back from what ``_compact`` stored (parts already checked against the description)."""
    state = {name: t for name, t in stored.items() if "::" not in name}
    for name, info in described.items():
        if info.get("encoding", "raw") == "raw":
            continue
        prefix = f"{name}::"
        parts = {key[len(prefix):]: t for key, t in stored.items() if key.startswith(prefix)}
        try:
            state[name] = decode_sparse(info["encoding"], parts, info["shape"], getattr(torch, info["dtype"]))
        except (ValueError, IndexError, RuntimeError) as exc:
            raise ArtifactError(f"{path}: tensor {name!r} ({info['encoding']}) cannot be decoded: {exc}") from None
    return state


def _retie(model: nn.Module, aliases: dict[str, str]) -> None:
    """Make aliased parameters the same object again, as they were when saved."""
    params = dict(model.named_parameters())
    for alias, canonical in aliases.items():
        owner_name, _, leaf = alias.rpartition(".")
        owner = model.get_submodule(owner_name)
        setattr(owner, leaf, params[canonical] if canonical in params else model.get_buffer(canonical))


def _read_at(fd: int, name: str) -> bytes:
    try:
        with open(name, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=fd)) as f:
            return f.read()
    except FileNotFoundError as exc:
        exc.filename = name
        raise


def _parse_weights(data: bytes, path: Path) -> dict[str, Tensor]:
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
