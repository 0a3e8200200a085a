"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP): save, resume at any world
size, and consolidate into one slimkit artifact.

Each rank writes its own shards of the model and optimizer state (``get_state_dict`` gives them
under parameter names, as DTensors under FSDP); the metadata records every shard's global offsets,
so ``load`` at another world size reads exactly the pieces each new rank needs (resharding).
Scheduler, GradScaler, batch position, RNG and step travel in one JSON ``meta`` entry written
once (tensors inline, see ``training.statefile``); DCP's own ``.metadata`` index is a pickle, read
here by an unpickler that admits only DCP's metadata classes, so loading runs no code from the file. ``save_checkpoint`` / ``load_checkpoint`` have the signatures of slimkit.training.checkpoint,
so ``slimkit.train(..., checkpoints=slimkit.distributed.checkpoint)`` uses them for its resumable
checkpoints. Settings are checked like single-process checkpoints; the world size may change.

Example:
    >>> consolidate("run1/checkpoint", models.from_spec("gpt:n_layer=2"), "gpt-trained")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from slimkit.atomic import install
from slimkit.errors import ArtifactError
from slimkit.training.checkpoint import check_config, check_scaler, restore_loop_state, rng_state
from slimkit.training.statefile import decode, encode
from slimkit.untrusted import parse_json

FOLDER = "sharded"
FORMAT = 2  # 2: meta as JSON (1 pickled it, no longer read)


def checkpoint_file(checkpoint_dir: str | os.PathLike) -> Path:
    """The file whose presence means a complete checkpoint (DCP writes its metadata last)."""
    return Path(checkpoint_dir) / FOLDER / ".metadata"


def save_checkpoint(checkpoint_dir, *, step: int, config: dict, model: nn.Module, optimizer, scheduler, scaler,
                    batches, extra: dict) -> Path:
    """Every rank calls this; shards go to ``<checkpoint_dir>/sharded.tmp``, renamed once complete."""
    final = Path(checkpoint_dir) / FOLDER
    tmp = final.with_name(FOLDER + ".tmp")
    model_state, optimizer_state = get_state_dict(model, optimizer)
    meta = {"format": FORMAT, "step": step, "config": config, "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None, "batches": batches.state_dict(),
            "rng": rng_state(), "extra": extra, "world_size": _world_size()}
    dcp.save({"model": model_state, "optimizer": optimizer_state, "meta": _as_json(meta)}, checkpoint_id=tmp)
    if _rank() == 0:  # the previous checkpoint stays intact until the new one is complete
        install(tmp, final, owned=("*",))  # every file in the folder is DCP's
    if dist.is_initialized():
        dist.barrier()
    return final


def load_checkpoint(checkpoint_dir, *, config: dict, model: nn.Module, optimizer, scheduler, scaler,
                    batches) -> tuple[int, dict]:
    """Restore everything in place, resharding to this run's world size; returns (step, extra)."""
    path = Path(checkpoint_dir) / FOLDER
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "meta": io.BytesIO()}
    _load(state, path, "not a readable sharded checkpoint for this model and optimizer")
    meta = _from_json(state["meta"], path)
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a slimkit sharded checkpoint of format {FORMAT}")
    check_config(path, meta["config"], config)
    check_scaler(path, meta["scaler"], scaler)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    restore_loop_state(meta, scheduler, scaler, batches)
    return meta["step"], meta["extra"]


def saved_world_size(checkpoint_dir) -> int:
    """The world size that wrote the checkpoint (read in one process)."""
    state = {"meta": io.BytesIO()}
    path = Path(checkpoint_dir) / FOLDER
    _load(state, path, "not a readable sharded checkpoint", no_dist=True)
    return _from_json(state["meta"], path)["world_size"]


def consolidate(checkpoint_dir, model: nn.Module, out) -> Path:
    """Load the sharded weights into ``model`` (plain, unsharded, same architecture; one process) and
    save it as a slimkit artifact in ``out``.

    Example:
        >>> consolidate("run1", GPT(GPTConfig(n_layer=2)), "gpt-consolidated")  # doctest: +SKIP
    """
    from slimkit.io import save

    path = Path(checkpoint_dir) / FOLDER
    state = {"model": model.state_dict()}
    _load(state, path, f"cannot consolidate into a {type(model).__name__}", no_dist=True)
    model.load_state_dict(state["model"])
    save(model, out)
    return Path(out)


def _load(state: dict, path: Path, problem: str, **options) -> None:
    """``dcp.load`` through SafeReader; every failure an ArtifactError (a refused index named as such)."""
    reader = SafeReader(path)
    try:
        dcp.load(state, storage_reader=reader, **options)
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - CheckpointException is a BaseException
        if reader.refusal is not None:
            raise reader.refusal from None
        text = str(exc).strip()
        raise ArtifactError(f"{path}: {problem} ({text.splitlines()[0][:300] if text else type(exc).__name__})") \
            from None


def _as_json(value) -> io.BytesIO:
    return io.BytesIO(json.dumps(encode(value, None), allow_nan=False).encode())


def _from_json(buffer: io.BytesIO, path: Path) -> dict:
    meta = decode(parse_json(buffer.getvalue(), path / "meta"), None, str(path / "meta"))
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: its meta entry is not a slimkit checkpoint record")
    return meta


class SafeReader(FileSystemReader):
    """DCP's file reader whose ``.metadata`` unpickler builds only DCP's metadata classes, torch.Size,
    dtypes and layouts (anything else in the file is refused, never imported or called)."""

    refusal: ArtifactError | None = None

    def read_metadata(self, *args, **kwargs) -> dcp_metadata.Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = _MetadataUnpickler(stream).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
                metadata = exc
        if not isinstance(metadata, dcp_metadata.Metadata):
            self.refusal = ArtifactError(f"{path}: not a readable checkpoint index ({metadata})")
            raise self.refusal
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == dcp_metadata.__name__ and isinstance(getattr(dcp_metadata, name, None), type):
            return getattr(dcp_metadata, name)
        allowed = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
                   ("torch", "Size"): torch.Size, ("pathlib", "PosixPath"): Path,
                   ("torch.serialization", "_get_layout"): torch.serialization._get_layout}
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused global {module[:60]}.{name[:60]}")


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1
