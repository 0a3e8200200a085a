"""Resumable training checkpoints: model, optimizer, scaler, scheduler, RNG and data position.

One file, ``<checkpoint_dir>/train-state.pt``, written to a temporary name and renamed, so an
interruption during the write leaves the previous checkpoint intact. Resuming checks that the
checkpoint belongs to this run (same settings, same parameter names and shapes) and names any mismatch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from slimkit.errors import ArtifactError

FILE = "train-state.pt"
FORMAT = 1
# Settings that may change between the run that saved and the run that resumes.
FREE_FIELDS = {"steps", "threads", "log_dir", "log_every", "checkpoint_dir", "checkpoint_every", "resume"}


def checkpoint_file(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / FILE


def save_checkpoint(checkpoint_dir, *, step: int, config: dict, model, optimizer, scheduler, scaler,
                    batches, extra: dict) -> Path:
    path = checkpoint_file(checkpoint_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT, "step": step, "config": config,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None, "batches": batches.state_dict(),
        "rng": rng_state(), "extra": extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(checkpoint_dir, *, config: dict, model, optimizer, scheduler, scaler, batches) -> tuple[int, dict]:
    """Restore everything in place; returns (step to continue from, extra)."""
    path = checkpoint_file(checkpoint_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ArtifactError(f"{path}: not a readable slimkit training checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a slimkit training checkpoint of format {FORMAT}")
    check_config(path, state["config"], config)
    _check_model(path, state["model"], model.state_dict())
    check_scaler(path, state["scaler"], scaler)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_loop_state(state, scheduler, scaler, batches)
    return state["step"], state["extra"]


def check_scaler(path: Path, saved: dict | None, scaler) -> None:
    """A checkpoint saved with a GradScaler resumes only with one, and the other way round."""
    if (saved is None) != (scaler is None):
        raise ArtifactError(f"{path}: saved {'with' if saved else 'without'} a GradScaler, "
                            f"this run is {'with' if scaler else 'without'} one")


def restore_loop_state(saved: dict, scheduler, scaler, batches) -> None:
    """What a resumed loop needs besides model and optimizer: schedule, loss scale, data position, RNG."""
    scheduler.load_state_dict(saved["scheduler"])
    if scaler:
        scaler.load_state_dict(saved["scaler"])
    batches.load_state_dict(saved["batches"])
    _set_rng_state(saved["rng"])


def check_config(path: Path, saved: dict, current: dict) -> None:
    """The settings a checkpoint was saved with equal this run's, apart from FREE_FIELDS."""
    differ = [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
              for k in sorted((set(saved) | set(current)) - FREE_FIELDS) if saved.get(k) != current.get(k)]
    if differ:
        raise ArtifactError(f"{path} was written by a run with other settings ({'; '.join(differ)}); "
                            "resume with the same settings or start a new checkpoint_dir")


def _check_model(path: Path, saved: dict, current: dict) -> None:
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    shapes = [f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(current[k].shape)}"
              for k in set(saved) & set(current) if saved[k].shape != current[k].shape]
    problems = ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {unexpected[:5]}"] if unexpected
                                                                   else []) + sorted(shapes)[:5]
    if problems:
        raise ArtifactError(f"{path} does not fit this model: {'; '.join(problems)}")


def rng_state() -> dict:
    """Every random generator a run draws from (torch, Python, NumPy, CUDA), as restore_loop_state restores it."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
