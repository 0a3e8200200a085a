"""Baseline table: the reference models and MiniLM as slimkit measures them, with training times.

Run: python benchmarks/bench_baselines.py [--retrain]
Prints a markdown table (the machine on its first line). Quality, bytes and parameters are exact;
latency is the median of 7 timed calls after warm-up with 2 torch threads.
"""

import argparse
import tempfile
import time

from slimkit.demo import run_demo
from slimkit.machine import machine_line
from slimkit.evaluation.report import markdown_table
from slimkit.io import read_meta
from slimkit.models import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="retrain instead of loading the cache")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        records, _, skipped = run_demo(out, retrain=args.retrain)
    print(f"Machine: {machine_line(2)}\n")
    print(markdown_table(records))
    print("\n| model | training steps | training time (s) |\n|---|---|---|")
    for name in zoo.NAMES:
        metrics = read_meta(zoo.cache_path(name))["metrics"]
        print(f"| {name} | {metrics['recipe']['steps']} | {metrics['train_seconds']} |")
    for note in skipped:
        print(note)
    print(f"\nwall time of this run: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
