"""Turn a model and a TrainSetup into what a measured step needs: the prepared model, its optimizer
and the training loop's precision."""

from __future__ import annotations

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.memory.setup import TrainSetup

# the planner's precisions as slimkit.train names them ("bf16" storage trains with no autocast)
LOOP_PRECISIONS = {"amp-bf16": "bf16", "amp-fp16": "fp16", "tf32": "tf32"}


def prepare(model: nn.Module, setup: TrainSetup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    """Apply ``setup`` to ``model`` in place: LoRA/QLoRA adapters, dtype, checkpointing; build the optimizer.

    >>> model, optimizer, precision = prepare(gpt, TrainSetup(precision="amp-bf16"))  # doctest: +SKIP
    """
    from slimkit.training.checkpointing import enable_checkpointing

    device = next(model.parameters()).device
    if setup.attention != "sdpa":
        raise UserInputError("measuring eager attention is not supported: the models run SDPA; "
                             "use attention='sdpa' with --measure")
    if setup.precision == "amp-fp16" and device.type == "cpu":
        raise UserInputError("amp-fp16 needs loss scaling on a GPU; measure amp-bf16 on CPU instead")
    if setup.precision == "bf16":
        model.to(torch.bfloat16)
    if setup.lora:
        from slimkit.adapters import LoRAConfig
        from slimkit.adapters.lora import inject

        # every Linear inside the blocks, as the QLoRA paper does; the (tied) LM head stays frozen
        head = ("lm_head",) if isinstance(getattr(model, "lm_head", None), nn.Linear) else ()  # an encoder has none
        inject(model, LoRAConfig(rank=setup.lora_rank, alpha=2.0 * setup.lora_rank, exclude=head,
                                 base="nf4" if setup.qlora else "float",
                                 dtype="bfloat16" if setup.precision == "bf16" else "float32"))
    if setup.checkpointing != "none":
        enable_checkpointing(model, "blocks" if setup.checkpointing == "full" else ["blocks.*.mlp"])
    if setup.precision == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    params = [p for p in model.parameters() if p.requires_grad]
    return model, make_optimizer(params, setup), LOOP_PRECISIONS.get(setup.precision, "fp32")


def make_optimizer(params: list[torch.Tensor], setup: TrainSetup) -> torch.optim.Optimizer:
    """The optimizer ``setup.optimizer`` names, with torch's default implementation choice."""
    if setup.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    if setup.optimizer == "adamw8bit":
        try:
            from slimkit.optim import AdamW8bit
        except ImportError:
            raise UserInputError("adamw8bit needs slimkit.optim.AdamW8bit, which this install lacks") from None
        return AdamW8bit(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3, fused=True if setup.optimizer == "adamw-fused" else None)
