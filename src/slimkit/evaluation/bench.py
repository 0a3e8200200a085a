"""Measuring cost: latency (see slimkit.timing) and peak memory of one inference call."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from slimkit.profiling import cpu_allocation_events, cuda_peak_bytes, running_peak


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
