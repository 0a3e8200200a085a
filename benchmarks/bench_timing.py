"""What re-timing a disturbed round costs ``slimkit.evaluate``, and how often it happens.

Run (about 2 minutes on an idle 2-core machine, 8.5 on one loaded 4x over; the reference models load
from the user cache):
    python benchmarks/bench_timing.py [--threads 2] [--reps 5] [--bases mlp,cnn,gpt,minilm]

Prints the machine line, then one markdown row per base model and timing: "one round" is
``latency_ms(..., max_rounds=1)`` (a plain median of 7 calls after warm-up, slimkit's timing before
re-timing was added), "re-timed" the default (a round whose median exceeds 1.5x the fastest call
is timed again, up to 3 rounds, the lowest median kept). The two alternate, --reps times each, in
one process after one untimed evaluate(). Columns: the median wall time of a whole evaluate() call
(quality, artifact bytes, latency, peak memory), the median and the spread (max / min) of the
latency figures it reported, and the share of latency measurements that needed a second round.
On an idle machine "re-timed" should cost what "one round" does; on a loaded one it may cost up to
3x the timed calls, and its figures should spread less.
"""

from __future__ import annotations

import argparse
import statistics
import time

import slimkit.evaluation
import slimkit.timing
from slimkit.data import minilm
from slimkit.machine import machine_line
from slimkit.models import zoo

TIMINGS = {"one round": 1, "re-timed": 3}


def measure(base: str, threads: int, reps: int) -> list[str]:
    model = minilm().model if base == "minilm" else zoo.reference(base)
    slimkit.evaluate(model, name=base, threads=threads)  # first-call costs out of the comparison
    wall: dict = {label: [] for label in TIMINGS}
    figures: dict = {label: [] for label in TIMINGS}
    retimed: dict = {label: 0 for label in TIMINGS}
    for _ in range(reps):
        for label, rounds in TIMINGS.items():
            calls = [0]

            def counted(call, *, rounds=rounds, **kwargs):
                def counting():
                    calls[0] += 1
                    return call()
                return slimkit.timing.latency_ms(counting, max_rounds=rounds, **kwargs)

            slimkit.evaluation.latency_ms = counted
            start = time.perf_counter()
            record = slimkit.evaluate(model, name=base, threads=threads)
            wall[label].append(time.perf_counter() - start)
            figures[label].append(record.latency_ms)
            retimed[label] += calls[0] > 2 + record.latency_runs
    slimkit.evaluation.latency_ms = slimkit.timing.latency_ms
    return [f"| {base} | {label} | {statistics.median(wall[label]) * 1e3:.1f} | "
            f"{statistics.median(figures[label]):.3f} | {max(figures[label]) / min(figures[label]):.2f} | "
            f"{retimed[label]}/{reps} |" for label in TIMINGS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5, help="evaluate() calls per base model and timing")
    parser.add_argument("--bases", default="mlp,cnn,gpt,minilm", help="comma-separated: mlp, cnn, gpt, minilm")
    args = parser.parse_args()
    print(machine_line(args.threads))
    print()
    print("| model | timing | evaluate() ms (median) | latency ms (median) | latency max/min | re-timed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for base in args.bases.split(","):
        for row in measure(base, args.threads, args.reps):
            print(row, flush=True)


if __name__ == "__main__":
    main()
