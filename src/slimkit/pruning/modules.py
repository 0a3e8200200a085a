"""Smaller dense layers that structured pruning swaps in, and how they are cut from the originals.

Each ``Pruned*`` class is its torch base class plus ``slimkit_spec`` / ``from_slimkit_spec``, so
``slimkit.save`` records its new shape and ``slimkit.load`` rebuilds it (see io.py).

>>> small = shrink_linear(nn.Linear(8, 4), out_keep=torch.tensor([0, 2]))
>>> small.weight.shape
torch.Size([2, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrunedLinear(nn.Linear):
    def slimkit_spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> PrunedLinear:
        return cls(spec["in_features"], spec["out_features"], bias=spec["bias"])


class PrunedConv2d(nn.Conv2d):
    def slimkit_spec(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": self.padding
                if isinstance(self.padding, str) else list(self.padding), "dilation": list(self.dilation),
                "groups": self.groups, "bias": self.bias is not None, "padding_mode": self.padding_mode}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> PrunedConv2d:
        return cls(**spec)


class PrunedBatchNorm2d(nn.BatchNorm2d):
    def slimkit_spec(self) -> dict:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> PrunedBatchNorm2d:
        return cls(**spec)


class PrunedSelfAttention(nn.Module):
    """Self-attention with fused qkv and fewer heads (slimkit's GPT: causal; a ViT's: not):
    qkv (C -> 3 * heads * head_dim), proj back to C."""

    def __init__(self, n_embd: int, n_head: int, head_dim: int, dropout: float = 0.0, causal: bool = True) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout, self.causal = n_head, head_dim, dropout, causal
        self.qkv = nn.Linear(n_embd, 3 * n_head * head_dim)
        self.proj = nn.Linear(n_head * head_dim, n_embd)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """``attn_mask`` and ``is_causal`` as timm's Attention takes them (its Block passes them by keyword)."""
        B, T, _ = x.shape
        width = self.n_head * self.head_dim
        # (B, T, width) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(width, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal or is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, width))

    def slimkit_spec(self) -> dict:
        return {"n_embd": self.qkv.in_features, "n_head": self.n_head, "head_dim": self.head_dim,
                "dropout": self.dropout, "causal": self.causal}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> PrunedSelfAttention:
        return cls(**spec)


def shrink_linear(layer: nn.Linear, out_keep: Tensor | None = None, in_keep: Tensor | None = None) -> PrunedLinear:
    """A PrunedLinear holding the kept output rows and input columns of ``layer``."""
    w = layer.weight.detach()
    w = w if out_keep is None else w[out_keep]
    w = w if in_keep is None else w[:, in_keep]
    new = PrunedLinear(w.shape[1], w.shape[0], bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias if out_keep is None else layer.bias[out_keep])
    return new.train(layer.training)


def shrink_conv(conv: nn.Conv2d, out_keep: Tensor | None = None, in_keep: Tensor | None = None) -> PrunedConv2d:
    """A PrunedConv2d with the kept filters and input channels (a depthwise conv keeps the same for both)."""
    depthwise = conv.groups > 1
    w = conv.weight.detach()
    w = w if out_keep is None else w[out_keep]
    if in_keep is not None and not depthwise:
        w = w[:, in_keep]
    out_ch = w.shape[0]
    in_ch = out_ch if depthwise else w.shape[1]
    new = PrunedConv2d(in_ch, out_ch, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                       groups=out_ch if depthwise else 1, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                       device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias if out_keep is None else conv.bias[out_keep])
    return new.train(conv.training)


def shrink_batchnorm(bn: nn.BatchNorm2d, keep: Tensor) -> PrunedBatchNorm2d:
    """A PrunedBatchNorm2d with the kept channels' affine parameters and running statistics."""
    new = PrunedBatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, attr, None) is not None:
                getattr(new, attr).copy_(getattr(bn, attr)[keep])
        if bn.track_running_stats:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.weight.device if bn.affine else "cpu").train(bn.training)
