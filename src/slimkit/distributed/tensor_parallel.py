"""Tensor parallelism (Megatron-style) of slimkit's GPT with ``torch.distributed.tensor.parallel``.

In every block the attention's qkv and the MLP's first Linear are split by output rows
(``ColwiseParallel``: each rank computes its heads and its slice of the hidden layer) and the
attention's output projection and the MLP's second Linear by input columns (``RowwiseParallel``:
partial sums all-reduced), so one all-reduce per sub-layer in forward and one in backward.
Embeddings and norms stay replicated.

The fused qkv weight is laid out [q; k; v]; a plain row split would give rank 0 all of q and half of
k. ``parallelize_gpt`` first reorders its rows to [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] so that each rank
holds whole heads, and gives each attention a forward that works on its local heads.
``gather_qkv_rows`` undoes the reordering (e.g. to compare with or save as the original layout).

Example (under torchrun, 2 ranks):
    >>> mesh = init_device_mesh("cpu", (2,))  # doctest: +SKIP
    >>> parallelize_gpt(model, mesh)  # doctest: +SKIP
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from slimkit.errors import UserInputError

PLAN = {"attn.qkv": ColwiseParallel(), "attn.proj": RowwiseParallel(),
        "mlp.0": ColwiseParallel(), "mlp.2": RowwiseParallel()}


def qkv_order(n_embd: int, world_size: int) -> Tensor:
    """Row permutation of a fused [q; k; v] weight that gives each of ``world_size`` ranks whole heads."""
    part = n_embd // world_size
    return torch.cat([torch.arange(which * n_embd + r * part, which * n_embd + (r + 1) * part)
                      for r in range(world_size) for which in range(3)])


def parallelize_gpt(model: nn.Module, mesh) -> nn.Module:
    """Split every block of a slimkit GPT over the 1-D ``mesh`` in place; returns ``model``."""
    world = mesh.size()
    n_head, n_embd = model.config.n_head, model.config.n_embd
    if n_head % world:
        raise UserInputError(f"n_head={n_head} does not split over {world} ranks: tensor parallelism gives each "
                             f"rank whole heads; use a world size that divides {n_head}")
    order = qkv_order(n_embd, world)
    for block in model.blocks:
        qkv = block.attn.qkv
        with torch.no_grad():
            qkv.weight.copy_(qkv.weight[order])
            qkv.bias.copy_(qkv.bias[order])
        parallelize_module(block, mesh, PLAN)
        block.attn.local_heads = n_head // world
        block.attn.forward = types.MethodType(_local_attention, block.attn)
    return model


def gather_qkv_rows(tensor: Tensor, world_size: int) -> Tensor:
    """A full (3 n_embd, ...) qkv weight, bias or gradient in the reordered layout, back in [q; k; v] order."""
    order = qkv_order(tensor.shape[0] // 3, world_size)
    return tensor[torch.argsort(order)]


def _local_attention(self, x: Tensor) -> Tensor:
    """CausalSelfAttention.forward on this rank's heads: qkv yields [q_r k_r v_r], proj sums over ranks."""
    B, T, _ = x.shape
    q, k, v = self.qkv(x).chunk(3, dim=2)  # each (B, T, local width)
    width = q.shape[-1]
    q, k, v = (t.view(B, T, self.local_heads, width // self.local_heads).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
    return self.proj(y.transpose(1, 2).reshape(B, T, width))
