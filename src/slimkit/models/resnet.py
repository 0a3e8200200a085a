"""A small residual CNN with BatchNorm for the 8x8 digits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64)  # channels per stage; each later stage halves H and W
    blocks_per_stage: int = 2
    classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut (a 1x1 conv + BN where the shape changes), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, residual stages, global average pooling, linear head. (B, 1, 8, 8) -> (B, classes)."""

    def __init__(self, config: ResNetConfig = ResNetConfig()) -> None:
        super().__init__()
        self.config = config
        first = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first), nn.ReLU()
        )
        blocks, in_ch = [], first
        for stage, width in enumerate(config.widths):
            for i in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride))
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_ch, config.classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.blocks(self.stem(x))  # (B, C, H, W)
        return self.head(features.mean(dim=(2, 3)))

    def example_input(self) -> Tensor:
        """A small batch of the shape ``forward`` takes (what structured pruning traces the model with)."""
        return torch.zeros(2, self.config.in_channels, 8, 8)
