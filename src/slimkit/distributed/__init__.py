"""Distributed training on torch.distributed, launched with ``torchrun``: DDP, FSDP2 (ZeRO-3 sharding
with mixed precision and CPU offload), tensor parallelism of the GPT, and sharded checkpoints
(torch.distributed.checkpoint) that reshard to another world size and consolidate into one artifact.

>>> from slimkit import distributed  # in a script started by: torchrun --standalone --nproc-per-node 2 s.py
>>> info = distributed.init()  # doctest: +SKIP
>>> model, result = distributed.train(model, batches, TrainConfig(steps=100), strategy="fsdp")  # doctest: +SKIP
>>> distributed.destroy()  # doctest: +SKIP
"""

from slimkit.distributed.checkpoint import consolidate, load_checkpoint, save_checkpoint
from slimkit.distributed.ddp import RankShare, SampledBatches, wrap
from slimkit.distributed.fsdp import FSDPConfig, shard
from slimkit.distributed.launch import DistInfo, RankFailure, check_env, check_peers, destroy, init, torchrun_command
from slimkit.distributed.tensor_parallel import gather_qkv_rows, parallelize_gpt
from slimkit.distributed.trainer import train

__all__ = ["DistInfo", "FSDPConfig", "RankFailure", "RankShare", "SampledBatches", "check_env", "check_peers",
           "consolidate", "destroy", "gather_qkv_rows", "init", "load_checkpoint", "parallelize_gpt",
           "save_checkpoint", "shard", "torchrun_command", "train", "wrap"]
