"""SmolLM2-135M-Instruct: weight-only formats against the float model on held-out prose.

Run: python benchmarks/bench_smollm2.py [--rows int8,int4-rtn,...] [--windows 16]
Prints a markdown table (machine on the first line): perplexity on the ``smollm2`` task's validation
windows, top-1 and greedy-32 agreement with the float model, artifact bytes, and decode tokens/s at
batch 1 on 2 threads after each layer's execution path is chosen (as the CLI does), timed in
alternating pairs against the float model in the same window (the speedup column). Quality passes run on 1 thread (on a shared machine two threads that wait on each
other at every operator's barrier ran 10x slower). Each row is what
``slimkit quantize <smollm2 folder> --task smollm2 <flags>`` does; the flags are in the table.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from slimkit.evaluation import evaluate
from slimkit.machine import machine_line
from slimkit.models import zoo
from slimkit.models.lm_task import SmolLM2Task
from slimkit.quantization import WeightQuantConfig, quantize
from slimkit.quantization.paths import choose_paths
from slimkit.timing import paired_speedup

CALIB_BATCHES = 8  # (4, 256)-token windows of calibration prose: 8,192 tokens

# label -> (CLI flags, config)
ROWS = {
    "int8": ("--weights int8 --per-channel", WeightQuantConfig("int8", group_size=None)),
    "int4-rtn": ("--weights int4 --group-size 128", WeightQuantConfig("int4", group_size=128)),
    # GPTQ orders columns by activation by default (static groups), as llm-compressor's GPTQ does
    "int4-gptq": ("--weights int4 --group-size 128 --method gptq",
                  WeightQuantConfig("int4", group_size=128, method="gptq", calibration_batches=CALIB_BATCHES)),
    "int4-gptq-no-actorder": ("--weights int4 --group-size 128 --method gptq --no-act-order",
                              WeightQuantConfig("int4", group_size=128, method="gptq", act_order=False,
                                                calibration_batches=CALIB_BATCHES)),
    # llm-compressor's GPTQ cannot use groups of 128 on SmolLM2 (576 = 4.5 x 128): these are its rows' grids
    "int4-gptq-g64": ("--weights int4 --group-size 64 --method gptq",
                      WeightQuantConfig("int4", group_size=64, method="gptq", calibration_batches=CALIB_BATCHES)),
    "int4-gptq-g64-no-actorder": ("--weights int4 --group-size 64 --method gptq --no-act-order",
                                  WeightQuantConfig("int4", group_size=64, method="gptq", act_order=False,
                                                    calibration_batches=CALIB_BATCHES)),
    "int4-gptq-channel": ("--weights int4 --per-channel --method gptq --no-act-order",
                          WeightQuantConfig("int4", group_size=None, method="gptq", act_order=False,
                                            calibration_batches=CALIB_BATCHES)),
    "int4-awq": ("--weights int4 --group-size 128 --method awq",
                 WeightQuantConfig("int4", group_size=128, method="awq", calibration_batches=CALIB_BATCHES)),
    "nf4-dq": ("--weights nf4 --group-size 64 --double-quant",
               WeightQuantConfig("nf4", group_size=64, double_quant=True)),
    "fp8": ("--weights fp8_e4m3 --per-channel", WeightQuantConfig("fp8_e4m3", group_size=None)),
    "int4-g32-asym": ("--weights int4 --group-size 32 --asymmetric",
                      WeightQuantConfig("int4", group_size=32, symmetric=False)),
}


def row(label: str, flags: str, record) -> str:
    q = record.quality
    speed = record.speedup
    tokens_s = 1e3 / (speed["latency_ms"] if speed else record.latency_ms)
    ratio = f"{speed['median']:.2f} ({speed['q1']:.2f}-{speed['q3']:.2f})" if speed else "1.00"
    return (f"| {label} | `{flags}` | {q['perplexity']:.3f} | {q['top1_agreement']:.4f} | "
            f"{q['greedy32_agreement']:.3f} | {record.artifact_bytes:,} | {tokens_s:.1f} | {ratio} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows of {', '.join(ROWS)}")
    parser.add_argument("--windows", type=int, default=16, help="validation windows of 256 tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = SmolLM2Task(windows=args.windows)
    base = zoo.reference("smollm2")
    print(machine_line(2))
    print(f"\nSmolLM2-135M-Instruct, {args.windows} x 256-token windows of held-out prose, 8 greedy prompts\n")
    print("| technique | flags | perplexity | top-1 agreement | greedy-32 agreement | bytes | decode tokens/s "
          "(batch 1, 2 threads) | speedup vs float (q1-q3) |")
    print("|---|---|---|---|---|---|---|---|")
    print(row("float32", "(none)", evaluate(base, task, name="float32")), flush=True)
    for label in args.rows.split(","):
        flags, config = ROWS[label]
        model = copy.deepcopy(base)
        quantize(model, config, calib=task.calibration(config.calibration_batches) if config.needs_calibration else None)
        choose_paths(model, threads=2)  # as the CLI does: each layer's fastest measured path
        record = evaluate(model, task, name=label)
        record.speedup = paired_speedup(task.example_call(model, 1), task.example_call(base, 1), pairs=9, threads=2)
        print(row(label, flags, record), flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
