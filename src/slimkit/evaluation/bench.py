"""Measuring cost: latency (see slimkit.timing) and peak memory of one inference call."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch
from torch import nn


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
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return resident_bytes(model) + torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return resident_bytes(model) + peak


@contextlib.contextmanager
def _quiet_native_stderr():
    """The profiler's C++ side prints start/stop lines to fd 2; keep them off the user's terminal."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
