"""The training set-up the planner models: precision, optimizer, batch, checkpointing, LoRA."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from slimkit.configs import build_config
from slimkit.errors import UserInputError

PRECISIONS = ("fp32", "tf32", "bf16", "amp-bf16", "amp-fp16")
OPTIMIZERS = ("adamw", "adamw-fused", "adamw8bit", "sgd")
CHECKPOINTING = ("none", "full", "selective")
ATTENTION = ("sdpa", "eager")
DEVICES = ("cpu", "cuda")
ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class TrainSetup:
    """How the model is trained.

    precision: "fp32", "tf32" (fp32 storage), "bf16" (weights, grads and states in bf16), or
        "amp-bf16" / "amp-fp16" (autocast over fp32 weights).
    optimizer: "adamw" (foreach on CUDA, per-tensor loop on CPU), "adamw-fused", "adamw8bit"
        (block-wise 8-bit moments) or "sgd" (with momentum).
    batch: sequences per micro-batch.
    seq: tokens per sequence.
    accumulate: micro-batches per optimizer step (memory depends on the micro-batch only).
    checkpointing: "none", "full" (every block) or "selective" (the MLP of every block).
    attention: "sdpa" (flash / memory-efficient kernels, no s^2 term) or "eager" (softmax matrix kept).
    lora_rank: 0 for full fine-tuning, else LoRA adapters of this rank on every Linear of the blocks.
    qlora: the frozen base stored as NF4 with double quantization (needs lora_rank > 0).
    device: "cpu" or "cuda"; decides the default AdamW implementation and allocator slack.
    zero_stage: ZeRO stage over the data-parallel ranks: 0 (DDP: every rank holds everything), 1
        (optimizer states sharded), 2 (+ gradients), 3 (+ parameters: FSDP's fully_shard).
    world_size: data-parallel ranks sharing the states; ``batch`` stays the micro-batch of one rank.
    """

    precision: str = "fp32"
    optimizer: str = "adamw"
    batch: int = 8
    seq: int = 128
    accumulate: int = 1
    checkpointing: str = "none"
    attention: str = "sdpa"
    lora_rank: int = 0
    qlora: bool = False
    device: str = "cpu"
    zero_stage: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        for name, allowed in (("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                              ("checkpointing", CHECKPOINTING), ("attention", ATTENTION), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise UserInputError(f"{name}={getattr(self, name)!r} is unknown; choose one of {', '.join(allowed)}")
        for name in ("batch", "seq", "accumulate", "world_size"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name}={getattr(self, name)} must be at least 1")
        if self.lora_rank < 0:
            raise UserInputError(f"lora_rank={self.lora_rank} must be 0 (no LoRA) or a positive rank")
        if self.qlora and not self.lora_rank:
            raise UserInputError("qlora=True needs lora_rank > 0: QLoRA trains LoRA adapters on the NF4 base")
        if self.zero_stage not in ZERO_STAGES:
            raise UserInputError(f"zero_stage={self.zero_stage!r} is unknown; choose one of 0, 1, 2, 3 "
                                 "(3 = FSDP's full sharding)")

    @property
    def autocast(self) -> bool:
        return self.precision.startswith("amp")

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    def replace(self, **changes) -> TrainSetup:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainSetup:
        return build_config(cls, data, "training set-up")
