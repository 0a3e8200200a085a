"""A plain MLP classifier for the 8x8 digits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 64  # flattened 8x8 image
    hidden: tuple[int, ...] = (256, 128)  # widths of the hidden layers
    classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))  # lists from JSON become tuples


class MLP(nn.Module):
    """Linear -> ReLU stacks; input (B, 1, 8, 8) or (B, 64), output logits (B, classes)."""

    def __init__(self, config: MLPConfig = MLPConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.in_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, config.classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def example_input(self) -> Tensor:
        """A small batch of the shape ``forward`` takes (what structured pruning traces the model with)."""
        return torch.zeros(2, self.config.in_features)
