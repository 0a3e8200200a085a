"""scikit-learn's 8x8 handwritten digits (1797 real images, embedded in scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (N, 1, 8, 8) scaled to [0, 1] and integer labels ``y`` of shape (N,)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Digits:
    train: Split
    val: Split
    test: Split


@lru_cache(maxsize=1)
def digits() -> Digits:
    """The fixed stratified 70/15/15 split of the digits (same on every machine).

    >>> d = digits(); d.train.x.shape, len(d.test)
    (torch.Size([1257, 1, 8, 8]), 270)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    idx = list(range(len(y)))
    train_idx, rest = train_test_split(idx, test_size=0.30, stratify=bunch.target, random_state=0)
    val_idx, test_idx = train_test_split(
        rest, test_size=0.50, stratify=bunch.target[rest], random_state=0
    )

    def take(ix: list[int]) -> Split:
        ix_t = torch.tensor(sorted(ix))
        return Split(x[ix_t], y[ix_t])

    return Digits(take(train_idx), take(val_idx), take(test_idx))
