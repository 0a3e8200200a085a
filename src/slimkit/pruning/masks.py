"""Unstructured and N:M masks: exact counts, per layer, per output row or global, and kept applied.

A mask is a bool tensor shaped like the weight (True = kept). ``attach_mask`` keeps it on the module
as a non-persistent buffer with two hooks: before every forward the weight is multiplied by it (so
any optimizer or training loop sees pruned weights as zero), and ``state_dict`` returns masked
weights (so what is saved is sparse even right after an optimizer step).

>>> keep = layer_mask(torch.randn(8, 16).abs(), 0.75)
>>> int(keep.sum())
32
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit import selection
from slimkit.errors import UserInputError

LAYER_TYPES = (nn.Linear, nn.Conv2d)


def select_layers(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...]
                  ) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """Linear/Conv2d layers matching ``include`` (all when empty) and not ``exclude``; {name: reason} for the rest."""
    return selection.select_layers(model, include, exclude, LAYER_TYPES, action="to prune",
                                   tied="pruning it would prune that tensor too")


def prune_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a target ``sparsity`` removes (rounded to the nearest)."""
    return round(sparsity * numel)


def lowest(scores: Tensor, count: int) -> Tensor:
    """Bool mask, True except at the ``count`` lowest scores (ties broken by position: exact count)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[scores.flatten().argsort(stable=True)[:count]] = False
    return keep.reshape(scores.shape)


def layer_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Keep mask pruning exactly ``prune_count(numel, sparsity)`` of the lowest scores."""
    return lowest(scores, prune_count(scores.numel(), sparsity))


def row_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Wanda's comparison group: each output row loses its lowest scores; the layer total is still exact."""
    rows = scores.reshape(scores.shape[0], -1)  # (out, in * k * k)
    per_row = rows.shape[1]
    total = prune_count(rows.numel(), sparsity)
    counts = [round(total * (r + 1) / len(rows)) - round(total * r / len(rows)) for r in range(len(rows))]
    return torch.stack([lowest(row, c) for row, c in zip(rows, counts)]).reshape(scores.shape) if per_row else \
        torch.ones_like(scores, dtype=torch.bool)


def global_masks(scores: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """One threshold over every layer's scores: exactly ``prune_count(total, sparsity)`` removed in all."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = lowest(flat, prune_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return masks


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Keep the ``n`` highest scores of every ``m`` consecutive inputs of each output (2:4, 4:8)."""
    rows = scores.reshape(scores.shape[0], -1)  # (out, in * k * k)
    if rows.shape[1] % m:
        raise UserInputError(f"{n}:{m} sparsity needs the input size ({rows.shape[1]}) to be a multiple of {m}")
    groups = rows.reshape(rows.shape[0], -1, m)  # (out, in / m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.reshape(scores.shape)


def attach_mask(module: nn.Module, keep: Tensor) -> None:
    """Zero ``module.weight`` where ``keep`` is False and keep it zero (combined with an earlier mask)."""
    with torch.no_grad():
        if hasattr(module, "weight_mask"):
            keep = keep & module.weight_mask
            module.weight_mask.copy_(keep)
        else:
            module.register_buffer("weight_mask", keep.clone(), persistent=False)
            module._slimkit_mask_hooks = (module.register_forward_pre_hook(_mask_before_forward),
                                          module.register_state_dict_post_hook(_mask_state_dict))
        module.weight.masked_fill_(~keep, 0)  # not mul_: a negative weight times 0 is -0.0, not stored as zero


def reapply_masks(model: nn.Module) -> None:
    """Zero every masked weight again (after an optimizer step)."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_mask"):
                module.weight.masked_fill_(~module.weight_mask, 0)


def masks(model: nn.Module) -> dict[str, Tensor]:
    """{module name: keep mask} of every masked module."""
    return {name: m.weight_mask for name, m in model.named_modules() if hasattr(m, "weight_mask")}


def remove_masks(model: nn.Module) -> None:
    """Make the zeros permanent and drop the masks and their hooks (the weights may change freely after)."""
    reapply_masks(model)
    for module in model.modules():
        remove_mask(module)


def remove_mask(module: nn.Module) -> None:
    """Drop one module's mask and hooks, leaving its weight as it is."""
    if hasattr(module, "weight_mask"):
        for handle in module._slimkit_mask_hooks:
            handle.remove()
        del module._slimkit_mask_hooks
        del module.weight_mask


def _mask_before_forward(module: nn.Module, _args) -> None:
    with torch.no_grad():
        module.weight.masked_fill_(~module.weight_mask, 0)


def _mask_state_dict(module: nn.Module, state: dict, prefix: str, _local_metadata) -> None:
    key = f"{prefix}weight"
    if key in state:
        state[key] = state[key].masked_fill(~module.weight_mask, 0)
