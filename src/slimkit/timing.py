"""Timing with a fixed thread count: median of repeated calls after warm-up."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch


@contextlib.contextmanager
def fixed_threads(threads: int):
    """Run the block with ``torch.set_num_threads(threads)``, restoring the old count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def latency_ms(call: Callable[[], object], *, runs: int = 7, warmup: int = 2, threads: int = 2) -> float:
    """Median wall time in milliseconds of ``runs`` calls after ``warmup`` untimed ones.

    When CUDA is in use, each timed call is bracketed by a synchronize, so GPU work is counted.
    """
    if runs < 5:
        raise ValueError(f"runs={runs}: a median needs at least 5 timed runs")
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    with fixed_threads(threads):
        for _ in range(warmup):
            call()
        times = []
        for _ in range(runs):
            sync()
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
