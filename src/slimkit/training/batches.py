"""Batch sources whose position can be saved, so that a resumed run sees exactly the batches it would have.

``slimkit.train`` accepts either a source with ``next()``/``state_dict()``/``load_state_dict()`` or any
iterable of batches (a DataLoader: its epochs are cycled and the number of batches consumed is the
position; on resume that many are skipped, which is exact when the loader's order is seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import torch

from slimkit.errors import UserInputError


@runtime_checkable
class BatchSource(Protocol):
    def next(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class GeneratorBatches:
    """Batches drawn by ``draw(generator)`` from one seeded torch.Generator; its state is the position.

    >>> from slimkit.data import pycorpus, random_windows
    >>> train = pycorpus().train
    >>> source = GeneratorBatches(lambda g: random_windows(train, 16, 128, g), seed=0)  # doctest: +SKIP
    """

    def __init__(self, draw: Callable[[torch.Generator], Any], seed: int = 0) -> None:
        self.draw = draw
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> Any:
        return self.draw(self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def random_examples(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0) -> GeneratorBatches:
    """Batches of ``batch_size`` examples drawn with replacement from (x, y)."""

    def draw(generator: torch.Generator):
        idx = torch.randint(0, len(x), (batch_size,), generator=generator)
        return x[idx], y[idx]

    return GeneratorBatches(draw, seed)


_EMPTY = object()


class IterableBatches:
    """Cycles through an iterable (e.g. a DataLoader); the position is the number of batches taken."""

    def __init__(self, iterable: Iterable) -> None:
        self.iterable = iterable
        self.taken = 0
        self._iterator = iter(iterable)

    def next(self) -> Any:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.iterable)
            batch = next(self._iterator, _EMPTY)
            if batch is _EMPTY:
                raise UserInputError("the training data is empty: it gave no batch; pass a list (or "
                                     "DataLoader) of at least one batch, e.g. [(x, y)]") from None
        self.taken += 1
        return batch

    def state_dict(self) -> dict:
        return {"taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(self.iterable)
        for _ in range(state["taken"]):
            self.next()


def as_batch_source(data: Any) -> BatchSource:
    if isinstance(data, BatchSource):
        return data
    if isinstance(data, Iterable):
        return IterableBatches(data)
    raise TypeError(f"data must be a batch source (next/state_dict/load_state_dict) or an iterable of "
                    f"batches, not {type(data).__name__}")
