"""Data parallelism: DistributedDataParallel and batch sources that give each rank its share.

Every rank holds the whole model; DDP all-reduces (averages) the gradients during backward, so
with each rank taking 1/world of a global batch the step equals one process on the whole batch.
``slimkit.train`` skips that all-reduce on all but the last accumulation micro-batch (``no_sync``).

Two ways to shard the data: ``RankShare`` wraps any slimkit batch source (every rank draws the same
global batch from the same seed and keeps its rows: the position is the same on every rank, so a
checkpoint resumes at any world size), and ``SampledBatches`` reads a map-style dataset through
torch's ``DistributedSampler`` (disjoint indices per rank, reshuffled each epoch).

Example (under torchrun):
    >>> info = init()  # doctest: +SKIP
    >>> model = wrap(model, info)  # doctest: +SKIP
    >>> batches = RankShare(random_examples(x, y, 64), info.rank, info.world_size)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from slimkit.distributed.launch import DistInfo
from slimkit.errors import UserInputError
from slimkit.training.batches import as_batch_source


def wrap(model: nn.Module, info: DistInfo) -> DistributedDataParallel:
    """``model`` moved to this rank's device and wrapped in DDP (parameters and buffers broadcast from rank 0).

    Buffers are broadcast again before every forward only when BatchNorm updates them; constant ones
    (a QLoRA base's NF4 codes) are not re-sent each step.
    """
    model.to(info.device)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=batch_norm)


class RankShare:
    """This rank's rows of every global batch drawn from ``source`` (a tuple/list of tensors or a dict),
    moved to ``device`` if given.

    The global batch must split evenly: ``rows % world_size == 0``, so every rank's loss has the same
    number of targets and DDP's average equals the one-process mean.
    """

    def __init__(self, source: Any, rank: int, world_size: int, device: torch.device | None = None) -> None:
        self.source, self.rank, self.world_size, self.device = as_batch_source(source), rank, world_size, device

    def next(self) -> Any:
        return _rows(self.source.next(), self.rank, self.world_size, self.device)

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


class SampledBatches:
    """Batches of ``batch_size`` examples per rank from ``dataset`` through a DistributedSampler;
    epochs repeat (reshuffled by ``set_epoch``), the position is (epoch, batches taken in it)."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int, world_size: int, seed: int = 0) -> None:
        self.sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True)
        if len(self.loader) == 0:
            raise UserInputError(f"batch_size={batch_size} is larger than this rank's share of the dataset "
                                 f"({len(self.sampler)} examples); lower it")
        self.epoch, self.taken = 0, 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self._iterator = iter(self.loader)

    def next(self) -> Any:
        if self.taken == len(self.loader):
            self.epoch, self.taken = self.epoch + 1, 0
            self._start_epoch()
        self.taken += 1
        return next(self._iterator)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.taken = state["epoch"], 0
        self._start_epoch()
        for _ in range(state["taken"]):
            self.next()


def _rows(batch: Any, rank: int, world_size: int, device: torch.device | None) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world_size:
            raise UserInputError(f"a global batch of {batch.shape[0]} rows does not split evenly over "
                                 f"{world_size} ranks; use a batch size that is a multiple of {world_size}")
        return batch.chunk(world_size)[rank].to(device)
    if isinstance(batch, dict):
        return {k: _rows(v, rank, world_size, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_rows(v, rank, world_size, device) for v in batch)
    return batch

