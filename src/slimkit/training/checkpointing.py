"""Activation checkpointing: keep only each chosen module's input, recompute its inside in backward.

``enable_checkpointing(model, "blocks")`` checkpoints every transformer block (full, per-block);
``enable_checkpointing(model, ["blocks.*.mlp"])`` checkpoints only the modules whose names match
(selective: the MLP holds most of a block's activations and is cheap to recompute). Non-reentrant
``torch.utils.checkpoint``, so frozen bases, LoRA adapters and inputs without ``requires_grad`` all
get their gradients. The module tree and state dict are unchanged (the forward is wrapped in place).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence

from torch import nn
from torch.utils.checkpoint import checkpoint

from slimkit.errors import UserInputError
from slimkit.naming import closest_names

BLOCK_CONTAINERS = ("blocks", "layers", "h", "layer", "encoder.layer", "model.layers", "transformer.h")


def enable_checkpointing(model: nn.Module, targets: str | Sequence[str] = "blocks") -> list[str]:
    """Checkpoint the modules named by ``targets``; returns their names.

    ``targets`` is "blocks" (each child of the model's block list: ``blocks``, ``layers``,
    ``encoder.layer``, ...) or a list of fnmatch patterns over module names.

    >>> enable_checkpointing(gpt, ["blocks.*.mlp"])  # doctest: +SKIP
    ['blocks.0.mlp', 'blocks.1.mlp', 'blocks.2.mlp', 'blocks.3.mlp']
    """
    names = block_names(model) if targets == "blocks" else matching_names(model, targets)
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        if not getattr(module, "_slimkit_checkpointed", False):
            module.forward = functools.partial(_checkpointed, module.forward)
            module._slimkit_checkpointed = True
    return names


def disable_checkpointing(model: nn.Module) -> None:
    """Undo ``enable_checkpointing``."""
    for module in model.modules():
        if getattr(module, "_slimkit_checkpointed", False):
            del module.forward  # the instance attribute; the class's forward shows through again
            del module._slimkit_checkpointed


def block_names(model: nn.Module) -> list[str]:
    modules = dict(model.named_modules())
    for container in BLOCK_CONTAINERS:
        if isinstance(modules.get(container), (nn.ModuleList, nn.Sequential)):
            return [f"{container}.{i}" for i in range(len(modules[container]))]
    raise UserInputError(
        f"{type(model).__name__} has no block list (looked for {', '.join(BLOCK_CONTAINERS)}); "
        "name the modules to checkpoint with patterns instead, e.g. ['encoder.*']")


def matching_names(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    names = [name for name, _ in model.named_modules() if name]
    chosen = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if not chosen:
        close = closest_names(patterns[0], names)
        raise UserInputError(f"no module matches {list(patterns)}; closest names: {', '.join(close) or 'none'}")
    # a module inside another chosen one is recomputed by its parent already
    return [n for n in chosen if not any(n.startswith(p + ".") for p in chosen)]


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
