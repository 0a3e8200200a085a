"""Measuring cost: latency (see slimkit.timing) and peak memory of one inference call."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from slimkit.profiling import cpu_allocation_events, cuda_peak_bytes, running_peak
from slimkit.timing import paired_speedup


def resident_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (shared storages counted once)."""
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@torch.no_grad()
def peak_memory_bytes(model: nn.Module, call: Callable[[], object]) -> int:
    """Resident model bytes plus the peak of memory allocated during one call.

    On CUDA this is torch's own peak counter. On CPU it replays the allocator events that
    torch's profiler records (every allocation and free inside the call, workspaces included)
    and takes the highest running total.
    """
    if any(p.is_cuda for p in model.parameters()):
        return resident_bytes(model) + cuda_peak_bytes(call)
    return resident_bytes(model) + running_peak(cpu_allocation_events(call)[0])


@torch.no_grad()
def layer_speedups(layer: nn.Module, rows: list[int], threads: int) -> dict[str, dict]:
    """A quantized Linear's speed against the float nn.Linear of its dequantized weight, per batch-row
    count, timed in alternating pairs (``slimkit.timing.paired_speedup``) on one random input each."""
    weight = layer.dequantized_weight()
    reference = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device=weight.device)
    reference.weight.copy_(weight)
    if layer.bias is not None:
        reference.bias.copy_(layer.bias)
    result = {}
    for n in rows:
        x = torch.randn(n, layer.in_features, generator=torch.Generator().manual_seed(n)).to(weight.device)
        result[str(n)] = paired_speedup(lambda: layer(x), lambda: reference(x), threads=threads)
    return result
