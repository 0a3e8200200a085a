"""Fully sharded data parallelism (ZeRO-3) with PyTorch's FSDP2 ``fully_shard``.

Each transformer block becomes one FSDP unit, then the root takes what is left (embeddings, final
norm): every rank stores 1/world of each parameter, gradient and optimizer state (DTensor shards on
dim 0); a block's parameters are all-gathered just before its forward and backward and freed after.
Mixed precision: parameters gathered in ``param_dtype`` for compute, gradients reduced in
``reduce_dtype``, the sharded fp32 copy kept as master weights. CPU offload keeps shards, gradients
and optimizer states in host memory and steps the optimizer there (GPU runs only: on a CPU they are
there already, and FSDP2's CPUOffloadPolicy refuses a run without an accelerator).

A QLoRA model's NF4 base is stored in buffers (packed uint8 codes and scales, not floating point):
FSDP2 shards parameters only, so those bases stay whole on every rank (4.1 bits per weight) while
the LoRA adapters, biases and norms are sharded; a checkpoint saves them once.

Example (under torchrun):
    >>> shard(model, FSDPConfig(param_dtype="bf16"))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

from slimkit.configs import build_config
from slimkit.errors import UserInputError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BLOCK_LISTS = ("blocks", "layers", "layer", "h")  # ModuleList names of slimkit's GPT and HF models


@dataclass(frozen=True)
class FSDPConfig:
    """How ``shard`` wraps a model."""

    param_dtype: str = "fp32"
    """Dtype parameters are gathered in for forward/backward: "fp32", "bf16" or "fp16"."""
    reduce_dtype: str = "fp32"
    """Dtype gradients are reduce-scattered in."""
    cpu_offload: bool = False
    """Keep parameter shards, gradients and optimizer states in CPU memory (for GPU runs)."""
    reshard_after_forward: bool = True
    """Free gathered parameters after forward (ZeRO-3); False keeps them until backward (ZeRO-2-like)."""

    def __post_init__(self) -> None:
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in DTYPES:
                raise UserInputError(f"{name}={getattr(self, name)!r} is unknown; choose one of {', '.join(DTYPES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FSDPConfig:
        return build_config(cls, data, "FSDP")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks to wrap one by one: the items of every ModuleList named like a block list."""
    return [block for name, module in model.named_modules() if isinstance(module, nn.ModuleList)
            and name.rsplit(".", 1)[-1] in BLOCK_LISTS for block in module]


def shard(model: nn.Module, config: FSDPConfig = FSDPConfig(), mesh=None) -> nn.Module:
    """Shard ``model`` in place over ``mesh`` (default: all ranks, on the model's device type): one FSDP unit
    per block, then the root.

    Returns the same object, now also an ``FSDPModule`` (``set_requires_gradient_sync``, ``unshard``).
    """
    if config.cpu_offload and next(model.parameters()).device.type == "cpu":
        raise UserInputError("cpu_offload=True moves GPU shards to host memory; this model is on the CPU already "
                             "(FSDP2's CPUOffloadPolicy needs a GPU): leave cpu_offload off")
    blocks = transformer_blocks(model)
    if not blocks:
        raise UserInputError(f"{type(model).__name__} has no ModuleList named {', '.join(BLOCK_LISTS)}: FSDP "
                             "wraps one unit per block; give the model's blocks such a list")
    if mesh is None:  # FSDP2's own default is the accelerator's mesh, wrong for a CPU (gloo) run on a GPU machine
        mesh = init_device_mesh(next(model.parameters()).device.type, (dist.get_world_size(),))
    kwargs = dict(mesh=mesh, reshard_after_forward=config.reshard_after_forward,
                  mp_policy=MixedPrecisionPolicy(param_dtype=DTYPES[config.param_dtype],
                                                 reduce_dtype=DTYPES[config.reduce_dtype]))
    if config.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model
