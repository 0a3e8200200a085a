"""Resumable training checkpoints: model, optimizer, scaler, scheduler, RNG and data position.

One folder, ``<checkpoint_dir>/train-state/``: the tensors in ``tensors.safetensors`` and everything
else (scheduler, GradScaler, RNG states, batch position, settings) in ``state.json`` (see
``statefile``), so resuming unpickles nothing. The folder is written beside and swapped into place,
so an interruption during the write leaves the previous checkpoint intact. Resuming checks that the
checkpoint belongs to this run (same settings, same parameter names and shapes) and names any mismatch.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors, save as dump_tensors

from slimkit.atomic import replacing_dir
from slimkit.errors import ArtifactError
from slimkit.training.statefile import decode, encode
from slimkit.untrusted import parse_json, safetensors_header

FOLDER, STATE, TENSORS = "train-state", "state.json", "tensors.safetensors"
FORMAT = 2  # 2: JSON + safetensors (1 was a pickle, no longer read)
# Settings that may change between the run that saved and the run that resumes.
FREE_FIELDS = {"steps", "threads", "log_dir", "log_every", "checkpoint_dir", "checkpoint_every", "resume"}


def checkpoint_file(checkpoint_dir: str | os.PathLike) -> Path:
    """The file whose presence means a complete checkpoint."""
    return Path(checkpoint_dir) / FOLDER / STATE


def refuse_pickled(checkpoint_dir: str | os.PathLike) -> None:
    """A checkpoint folder holding only an earlier slimkit's ``train-state.pt`` (a pickle) is refused
    with what to do, instead of a resume that silently starts from step 0."""
    old = Path(checkpoint_dir) / "train-state.pt"
    if old.exists() and not checkpoint_file(checkpoint_dir).exists():
        raise ArtifactError(f"{old}: a checkpoint of an earlier slimkit, a pickle, which slimkit no longer reads "
                            "(unpickling can run code); delete it to train from step 0, or finish that run with "
                            "the slimkit that wrote it")


def save_checkpoint(checkpoint_dir, *, step: int, config: dict, model, optimizer, scheduler, scaler,
                    batches, extra: dict) -> Path:
    path = checkpoint_file(checkpoint_dir)
    state = {
        "format": FORMAT, "step": step, "config": config,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None, "batches": batches.state_dict(),
        "rng": rng_state(), "extra": extra,
    }
    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(encode(state, tensors), allow_nan=False)
    with replacing_dir(path.parent, owned=(STATE, TENSORS)) as tmp:
        (tmp / TENSORS).write_bytes(dump_tensors({k: t.clone() for k, t in tensors.items()}))  # clone: unties
        (tmp / STATE).write_text(text)
    return path


def read_state(checkpoint_dir) -> dict:
    """The saved training state (tensors included), read without unpickling anything."""
    path = checkpoint_file(checkpoint_dir)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)  # one handle: both files of the same save
    try:
        text, blob = (_read_at(fd, name, path.parent) for name in (STATE, TENSORS))
    finally:
        os.close(fd)
    safetensors_header(blob, path.with_name(TENSORS))
    try:
        tensors = load_tensors(blob)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{path.with_name(TENSORS)}: not a readable safetensors file ({exc})") from None
    state = decode(parse_json(text, path), tensors, str(path))
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a slimkit training checkpoint of format {FORMAT}")
    return state


def load_checkpoint(checkpoint_dir, *, config: dict, model, optimizer, scheduler, scaler, batches) -> tuple[int, dict]:
    """Restore everything in place; returns (step to continue from, extra)."""
    path = checkpoint_file(checkpoint_dir)
    state = read_state(checkpoint_dir)
    check_config(path, state["config"], config)
    _check_model(path, state["model"], model.state_dict())
    check_scaler(path, state["scaler"], scaler)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_loop_state(state, scheduler, scaler, batches)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ArtifactError(f"{path}: the saved state does not fit this run ({type(exc).__name__}: {exc})") from None
    return state["step"], state["extra"]


def _read_at(fd: int, name: str, folder: Path) -> bytes:
    try:
        with open(name, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=fd)) as f:
            return f.read()
    except FileNotFoundError:
        raise ArtifactError(f"{folder / name}: missing; the checkpoint is incomplete") from None


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
