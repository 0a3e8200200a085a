"""Build a reference architecture from a short text spec, e.g. ``gpt:n_layer=2,n_embd=64``."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.models.resnet import ResNet, ResNetConfig

ARCHITECTURES = {"gpt": (GPT, GPTConfig), "mlp": (MLP, MLPConfig), "cnn": (ResNet, ResNetConfig)}


def from_spec(spec: str, seed: int = 0) -> nn.Module:
    """A freshly initialised (seeded) model from ``NAME[:key=value,...]``; tuples are written with '-'.

    >>> from_spec("mlp:hidden=64-32")  # doctest: +SKIP
    >>> from_spec("gpt:n_layer=2,n_head=2,n_embd=64")  # doctest: +SKIP
    """
    name, _, options = spec.partition(":")
    if name not in ARCHITECTURES:
        raise UserInputError(f"unknown architecture {name!r} in {spec!r}; choose one of {', '.join(ARCHITECTURES)}")
    model_class, config_class = ARCHITECTURES[name]
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {}
    for item in filter(None, options.split(",")):
        key, _, raw = item.partition("=")
        if key not in fields:
            raise UserInputError(f"{name} has no setting {key!r}; settings: {', '.join(fields)}")
        try:
            values[key] = tuple(int(v) for v in raw.split("-")) if "tuple" in str(fields[key].type) else (
                float(raw) if "float" in str(fields[key].type) else int(raw))
        except ValueError:
            raise UserInputError(f"{key}={raw!r} in {spec!r} is not a number (tuples: 64-32)") from None
    try:
        config = config_class(**values)
    except ValueError as exc:
        raise UserInputError(f"{spec!r}: {exc}") from None
    torch.manual_seed(seed)
    return model_class(config)
