"""``slimkit.distributed.train``: ``slimkit.train`` on every rank, with the model wrapped for DDP or FSDP.

Each rank takes its rows of every global batch (``RankShare``), gradients are averaged across ranks
(on the last accumulation micro-batch only), resumable checkpoints are sharded DCP checkpoints that
reshard to another world size, and a rank that dies makes the others stop with ``RankFailure``.

Example (``torchrun --standalone --nproc-per-node 2 script.py``):
    >>> info = init()  # doctest: +SKIP
    >>> result = train(model, random_examples(x, y, 64), TrainConfig(steps=100), strategy="fsdp")  # doctest: +SKIP
"""

from __future__ import annotations

from functools import partial

import torch.distributed as dist
from torch import nn

from slimkit.distributed import checkpoint, ddp, fsdp
from slimkit.distributed.launch import DistInfo, collective_guard, init
from slimkit.errors import UserInputError
from slimkit.training import TrainConfig, TrainResult, cross_entropy_loss
from slimkit.training import train as train_one
from slimkit.training.loop import to_device

STRATEGIES = ("ddp", "fsdp")


def train(model: nn.Module, data, config: TrainConfig = TrainConfig(), *, strategy: str = "ddp",
          fsdp_config: fsdp.FSDPConfig = fsdp.FSDPConfig(), loss_fn=cross_entropy_loss, callbacks=(),
          info: DistInfo | None = None) -> tuple[nn.Module, TrainResult]:
    """Train ``model`` data-parallel over the ranks of the run; returns (the wrapped model, this rank's result).

    ``data`` yields *global* batches (the same on every rank, e.g. a seeded source); each rank keeps
    1/world of the rows. ``strategy``: "ddp" (replicated model, all-reduced gradients) or "fsdp"
    (parameters, gradients and optimizer states sharded, ``fsdp_config``).
    """
    if strategy not in STRATEGIES:
        raise UserInputError(f"strategy={strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    info = info or init()
    if strategy == "ddp":
        wrapped = ddp.wrap(model, info)
    else:
        wrapped = fsdp.shard(model.to(info.device), fsdp_config)
    batches = ddp.RankShare(data, info.rank, info.world_size, info.device)
    # the loss runs where the computation is (with CPU offload the parameters live in host memory)
    on_device = partial(_loss_on_device, loss_fn, info.device)
    with collective_guard(info):
        result = train_one(wrapped, batches, config, loss_fn=on_device, callbacks=callbacks, checkpoints=checkpoint)
        dist.barrier()
    return wrapped, result


def _loss_on_device(loss_fn, device, model: nn.Module, batch):
    return loss_fn(model, to_device(batch, device))
