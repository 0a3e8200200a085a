"""Training-loop benchmark: activation checkpointing (full and selective) and precision on an 8-layer GPT.

Run: python benchmarks/bench_training.py [--width 256] [--batch 16]
Prints a markdown table (the machine on its first line). Per configuration: the bytes autograd saves
for backward (exact, via saved-tensor hooks), the peak memory of one whole training step (resident
weights + the highest running total of allocations that torch's profiler records: activations,
gradients, optimizer states, recomputation), and the step time (median of 7 steps after 2 warm-up
steps, variants interleaved so that load on the machine hits them alike), each as a ratio to the
fp32 run without checkpointing.
"""

import argparse
import statistics
import time

import torch

from slimkit.data import pycorpus, random_windows
from slimkit.machine import machine_line
from slimkit.evaluation.bench import peak_memory_bytes
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.training import TrainConfig, enable_checkpointing
from slimkit.training.loop import cross_entropy_loss
from slimkit.training.precision import Precision

VARIANTS = [  # (name, precision, checkpointing)
    ("fp32, no checkpointing", "fp32", None),
    ("fp32, full (every block)", "fp32", "blocks"),
    ("fp32, selective (MLPs)", "fp32", ["blocks.*.mlp"]),
    ("fp32, selective (attention)", "fp32", ["blocks.*.attn"]),
    ("bf16 autocast, no checkpointing", "bf16", None),
    ("bf16 autocast, full", "bf16", "blocks"),
    ("fp16 autocast + GradScaler", "fp16", None),
]


class Run:
    """One model + optimizer + precision, stepping on fixed batches (the loop's own step function)."""

    def __init__(self, config: GPTConfig, precision: str, checkpointing, batch) -> None:
        from slimkit.training.loop import TrainState, train_step

        torch.manual_seed(0)
        self.model = GPT(config).train()
        if checkpointing:
            enable_checkpointing(self.model, checkpointing)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.state = TrainState(self.model, optimizer, TrainConfig(precision=precision))
        self.precision = Precision.create(precision, torch.device("cpu"))
        self.batch, self._step = batch, train_step

    def step(self) -> None:
        with torch.enable_grad():  # peak_memory_bytes measures inference calls under no_grad
            self._step(self.model, [self.batch], cross_entropy_loss, self.precision, self.state, ())

    def saved_bytes(self) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self.precision.autocast():
            cross_entropy_loss(self.model, self.batch)
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = GPTConfig(n_layer=args.layers, n_head=4, n_embd=args.width, block_size=128)
    batch = random_windows(pycorpus().train, args.batch, config.block_size, torch.Generator().manual_seed(0))
    runs = {name: Run(config, precision, ckpt, batch) for name, precision, ckpt in VARIANTS}
    for run in runs.values():
        run.step(), run.step()  # warm-up; the optimizer state exists from here on
    saved = {name: run.saved_bytes() for name, run in runs.items()}
    peak = {name: peak_memory_bytes(run.model, run.step) for name, run in runs.items()}
    times = {name: [] for name in runs}
    for _ in range(args.runs):
        for name, run in runs.items():
            start = time.perf_counter()
            run.step()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    params = sum(p.numel() for p in runs[VARIANTS[0][0]].model.parameters())
    base = VARIANTS[0][0]
    print(f"Machine: {machine_line(2)}\n")
    print(f"GPT {args.layers} layers x {args.width} wide ({params / 1e6:.1f} M parameters), batch {args.batch} x "
          f"{config.block_size} tokens, AdamW, 2 threads\n")
    print("| configuration | saved for backward (MiB) | ratio | step peak (MiB) | ratio | step time (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {saved[name] / 2**20:.1f} | {saved[name] / saved[base]:.2f} | {peak[name] / 2**20:.1f} | "
              f"{peak[name] / peak[base]:.2f} | {1000 * median[name]:.0f} | {median[name] / median[base]:.2f} |")


if __name__ == "__main__":
    main()
