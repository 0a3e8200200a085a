"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP): save, resume at any world
size, and consolidate into one slimkit artifact.

Each rank writes its own shards of the model and optimizer state (``get_state_dict`` gives them
under parameter names, as DTensors under FSDP); the metadata records every shard's global offsets,
so ``load`` at another world size reads exactly the pieces each new rank needs (resharding).
Scheduler, GradScaler, batch position, RNG and step travel in one pickled ``meta`` entry written
once. ``save_checkpoint`` / ``load_checkpoint`` have the signatures of slimkit.training.checkpoint,
so ``slimkit.train(..., checkpoints=slimkit.distributed.checkpoint)`` uses them for its resumable
checkpoints. Settings are checked like single-process checkpoints; the world size may change.

Example:
    >>> consolidate("run1/checkpoint", models.from_spec("gpt:n_layer=2"), "gpt-trained")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from slimkit.errors import ArtifactError
from slimkit.training.checkpoint import check_config, check_scaler, restore_loop_state, rng_state

FOLDER = "sharded"
FORMAT = 1


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
    dcp.save({"model": model_state, "optimizer": optimizer_state, "meta": _pickled(meta)}, checkpoint_id=tmp)
    if _rank() == 0:  # the previous checkpoint stays intact until the new one is complete
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    if dist.is_initialized():
        dist.barrier()
    return final


def load_checkpoint(checkpoint_dir, *, config: dict, model: nn.Module, optimizer, scheduler, scaler,
                    batches) -> tuple[int, dict]:
    """Restore everything in place, resharding to this run's world size; returns (step, extra)."""
    path = Path(checkpoint_dir) / FOLDER
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "meta": io.BytesIO()}
    try:
        dcp.load(state, checkpoint_id=path)
    except Exception as exc:  # noqa: BLE001 - every unreadable checkpoint gets the same clear message
        raise ArtifactError(f"{path}: not a readable sharded checkpoint for this model and optimizer "
                            f"({str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__})"
                            ) from None
    state["meta"].seek(0)
    meta = torch.load(state["meta"], weights_only=False)
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
    dcp.load(state, checkpoint_id=Path(checkpoint_dir) / FOLDER, no_dist=True)
    state["meta"].seek(0)
    return torch.load(state["meta"], weights_only=False)["world_size"]


def consolidate(checkpoint_dir, model: nn.Module, out) -> Path:
    """Load the sharded weights into ``model`` (plain, unsharded, same architecture; one process) and
    save it as a slimkit artifact in ``out``.

    Example:
        >>> consolidate("run1", GPT(GPTConfig(n_layer=2)), "gpt-consolidated")  # doctest: +SKIP
    """
    from slimkit.io import save

    path = Path(checkpoint_dir) / FOLDER
    state = {"model": model.state_dict()}
    try:
        dcp.load(state, checkpoint_id=path, no_dist=True)
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"{path}: cannot consolidate into a {type(model).__name__} "
                            f"({str(exc).strip().splitlines()[0][:300]})") from None
    model.load_state_dict(state["model"])
    save(model, out)
    return Path(out)


def _pickled(value) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return buffer


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1
