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


# Enough pairs that the quartiles of the per-pair ratios (the 4th and 12th of 15) are stable.
MIN_PAIRS = 15


@torch.no_grad()
def paired_speedup(call: Callable[[], object], base_call: Callable[[], object], *, pairs: int = MIN_PAIRS,
                   warmup: int = 2, threads: int = 2) -> dict:
    """How many times faster ``call`` is than ``base_call``, timed in alternating pairs in one window.

    Load from other processes comes in bursts of seconds; timing a variant minutes after its baseline
    turned such bursts into ratios of 0.01x or 400x. Each pair times both calls back to back (their
    order alternating, so neither always runs second with warm caches), so a burst slows both of a
    pair and largely cancels in its ratio ``base_time / time``. Returns the median ratio, its
    quartiles (``q1``, ``q3``; their spread says how far to trust it), both calls' median times in
    ms, the pair count, and ``noisy`` (see ``is_noisy``).

    >>> paired_speedup(lambda: int4_model(x), lambda: float_model(x))  # doctest: +SKIP
    {'median': 1.8, 'q1': 1.7, 'q3': 1.9, 'latency_ms': 0.4, 'base_latency_ms': 0.72, 'pairs': 15, 'noisy': False}
    """
    if pairs < 5:
        raise ValueError(f"pairs={pairs}: quartiles need at least 5 pairs")
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    times, base_times = [], []
    with fixed_threads(threads):
        for _ in range(warmup):
            base_call()
            call()
        for i in range(pairs):
            if i % 2:
                times.append(_timed(call, sync))
                base_times.append(_timed(base_call, sync))
            else:
                base_times.append(_timed(base_call, sync))
                times.append(_timed(call, sync))
    q1, median, q3 = statistics.quantiles([b / t for b, t in zip(base_times, times)], n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "latency_ms": statistics.median(times) * 1e3,
            "base_latency_ms": statistics.median(base_times) * 1e3, "pairs": pairs,
            "noisy": is_noisy(q1, median, q3)}


def is_noisy(q1: float, median: float, q3: float) -> bool:
    """A speed ratio its spread does not support: the quartiles straddle 1.0 (faster or slower is not
    settled), or the spread between them is wider than the effect ``|median - 1|``."""
    return q1 <= 1.0 <= q3 or (q3 - q1) > abs(median - 1.0)
