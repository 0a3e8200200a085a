"""The running interpreter's standard-library source as a byte-level text corpus.

Files are assigned to train/val/test by a hash of their path relative to the standard library,
so the split is the same on every run and every machine with the same Python version. Test
suites (``test``/``tests``/``idle_test`` folders) and ``site-packages`` are left out.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
# Percent of files per split, chosen by path hash: 90 train, 5 val, 5 test.
_VAL_FROM, _TEST_FROM = 90, 95


@dataclass(frozen=True)
class PyCorpus:
    """Byte tensors (uint8, 1-D) of the concatenated files of each split, and their paths."""

    train: Tensor
    val: Tensor
    test: Tensor
    files: dict[str, list[str]]
    root: str


def _bucket(relative_path: str) -> int:
    digest = hashlib.sha256(relative_path.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100


def _stdlib_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*.py")
        if not _EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])
    )


@lru_cache(maxsize=2)
def pycorpus(root: str | None = None) -> PyCorpus:
    """Load the corpus (about 12 MB on CPython 3.11; takes about a second).

    >>> c = pycorpus(); c.train.dtype, len(c.val) > 100_000
    (torch.uint8, True)
    """
    base = Path(root or sysconfig.get_paths()["stdlib"])
    chunks: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    files: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for path in _stdlib_files(base):
        rel = path.relative_to(base).as_posix()
        bucket = _bucket(rel)
        split = "test" if bucket >= _TEST_FROM else "val" if bucket >= _VAL_FROM else "train"
        chunks[split].append(path.read_bytes())
        files[split].append(rel)
    tensors = {
        name: torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)
        for name, parts in chunks.items()
    }
    return PyCorpus(**tensors, files=files, root=str(base))


def random_windows(
    data: Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One batch of random windows: inputs (B, T) and next-byte targets (B, T), both int64."""
    if len(data) <= block_size + 1:
        raise ValueError(f"corpus of {len(data)} bytes is too short for block_size={block_size}")
    starts = torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[s : s + block_size + 1] for s in starts.tolist()]).long()
    return windows[:, :-1], windows[:, 1:]


def eval_windows(data: Tensor, block_size: int, count: int) -> tuple[Tensor, Tensor]:
    """``count`` evenly spaced, non-random windows (B, T) for a repeatable evaluation."""
    last = len(data) - block_size - 1
    starts = torch.linspace(0, last, count).long().tolist()
    windows = torch.stack([data[s : s + block_size + 1] for s in starts]).long()
    return windows[:, :-1], windows[:, 1:]
