"""Peak memory of one call: torch's profiler allocation events on CPU, CUDA's own peak counter on a GPU.

The profiler with ``profile_memory=True`` records every allocation and free the CPU allocator sees,
including the short-lived workspaces kernels allocate inside an op. The running sum of the events
gives the peak above the starting point.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable


def cpu_allocation_events(call: Callable[[], object]) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """Run ``call()`` under the profiler; returns (time ns, +/- bytes) allocator events in time order and the
    (start ns, end ns, name) spans of every profiled op and ``record_function`` block."""
    from torch.profiler import ProfilerActivity, profile

    # Python's cycle collector may free tensors of earlier, unrelated objects (a previous model) in the
    # middle of the call: those frees would lower the running total below the call's own peak. Collect
    # first and keep the collector off while profiling, so every event belongs to ``call()``.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call()
    finally:
        if was_enabled:
            gc.enable()
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    spans = [(e.start_ns(), e.end_ns(), e.name()) for e in events if e.name() != "[memory]"]
    return memory, spans


def running_peak(memory: list[tuple[int, int]]) -> int:
    """Highest running total of the allocator events (bytes above the starting point)."""
    running = peak = 0
    for _, nbytes in memory:
        running += nbytes
        peak = max(peak, running)
    return peak


def cuda_peak_bytes(call: Callable[[], object]) -> int:
    """Peak bytes CUDA's allocator held above the starting point during ``call()``."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


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
