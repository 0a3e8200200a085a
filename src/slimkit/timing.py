"""Timing with a fixed thread count: median of repeated calls after warm-up, re-timed when load disturbed it."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Callable

import torch


@contextlib.contextmanager
def fixed_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (None: as it is), restoring the old count after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# A round whose median is more than this many times the fastest call timed so far was slowed by other
# processes: on a quiet machine the demo's MLP and CNN calls stay within ~1.15x of their fastest,
# while bursts of load on this shared machine have slowed them 4x (CNN) to 80x (MLP).
DISTURBED = 1.5


@torch.no_grad()
def latency_ms(call: Callable[[], object], *, runs: int = 7, warmup: int = 2, threads: int = 2,
               max_rounds: int = 3) -> float:
    """Median wall time in milliseconds of ``runs`` calls after ``warmup`` untimed ones, re-timed if disturbed.

    Other processes only ever add time (timeit's documentation makes the point for its ``repeat``),
    and a burst of their load can slow most calls of a round: one cold demo timed its 0.07 ms MLP at
    5.9 ms. So a round whose median exceeds ``DISTURBED`` times the fastest call seen so far is
    followed by another round, up to ``max_rounds``, and the lowest round median is returned (best
    of rounds, as timeit does; each round a median, as torch.utils.benchmark reports). An
    undisturbed first round, the usual case, costs no more than before. When CUDA is in use, each
    timed call is bracketed by a synchronize, so GPU work is counted.

    >>> latency_ms(lambda: model(x), threads=2)  # doctest: +SKIP
    0.071
    """
    if runs < 5:
        raise ValueError(f"runs={runs}: a median needs at least 5 timed runs")
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    with fixed_threads(threads):
        for _ in range(warmup):
            call()
        fastest = best = math.inf
        for _ in range(max_rounds):
            times = [_timed(call, sync) for _ in range(runs)]
            fastest, best = min(fastest, *times), min(best, statistics.median(times))
            if best <= DISTURBED * fastest:
                break
    return best * 1e3


def _timed(call: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - start
