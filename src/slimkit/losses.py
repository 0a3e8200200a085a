"""The default objective of (inputs, targets) batches, shared by the training loop and Taylor importance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_entropy_loss(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    """Default loss: batch (inputs, targets); summed cross-entropy and the number of targets (-100 ignored)."""
    x, y = batch
    out = model(x)
    logits = getattr(out, "logits", out)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum")
    return loss, int((y != -100).sum())
