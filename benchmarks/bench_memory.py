"""Memory planner: predicted vs measured peak of real training steps of the reference GPT.

    python benchmarks/bench_memory.py [--quick] [--device cuda]

Prints a markdown table: configuration, the usual estimate (16 bytes/param + 34 sbhL), the
planner's prediction, the measured peak (CPU: profiler allocation events; CUDA:
max_memory_allocated) and the errors. Target: |planner error| <= 10% in every row.
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from slimkit.memory import TrainSetup, from_module, measure, plan
from slimkit.models.gpt import GPT, GPTConfig

SIZES = {"S": (4, 4, 128, 8, 256), "M": (6, 6, 192, 4, 512), "L": (8, 8, 256, 4, 256)}  # layers, heads, width, b, s
GPU_SIZES = {"G": (12, 12, 768, 8, 1024)}  # GPT-2-small-like (85M), measured only with --device cuda
COMMON = [dict(precision=p, checkpointing=c) for p, c in [
    ("fp32", "none"), ("amp-bf16", "none"), ("bf16", "none"), ("fp32", "full"), ("amp-bf16", "selective"),
    ("bf16", "full")]]
EXTRA = [  # on size S only: adapters, optimizers, accumulation
    dict(precision="fp32", lora_rank=8), dict(precision="amp-bf16", lora_rank=8, checkpointing="full"),
    dict(precision="fp32", lora_rank=8, qlora=True, checkpointing="full"),
    dict(precision="amp-bf16", lora_rank=8, qlora=True),
    dict(precision="fp32", optimizer="adamw8bit"), dict(precision="amp-bf16", optimizer="adamw8bit", checkpointing="full"),
    dict(precision="fp32", optimizer="sgd", accumulate=2), dict(precision="fp32", optimizer="adamw8bit", batch=1, seq=32),
]


def rows(quick: bool, device: str = "cpu"):
    sizes = {**SIZES, **GPU_SIZES} if device == "cuda" else SIZES
    for size, (n_layer, n_head, n_embd, batch, seq) in sizes.items():
        if quick and size != "S":
            continue
        for changes in COMMON + (EXTRA if size == "S" else []):
            changes = {"batch": batch, "seq": seq, **changes}
            yield size, GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=changes["seq"]), changes


def usual_estimate(model: GPT, setup: TrainSetup) -> float:
    """What most calculators print: 16 bytes per parameter plus 34 s b h L bytes of activations."""
    c = model.config
    return 16 * sum(p.numel() for p in model.parameters()) + 34 * setup.seq * setup.batch * c.n_embd * c.n_layer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="size S only")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, Python {sys.version.split()[0]}, {where}")
    print()
    print("| size | set-up | usual estimate MiB (err) | planner MiB | measured MiB | planner error | peak phase "
          "(planner / measured) |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for size, config, changes in rows(args.quick, args.device):
        torch.manual_seed(0)
        model = GPT(config).to(args.device)
        setup = TrainSetup(**changes, device=args.device)
        predicted = plan(from_module(model), setup)
        usual = usual_estimate(model, setup)
        measured = measure(model, setup)
        error = 100 * (predicted.peak / measured.peak - 1)
        worst = max(worst, abs(error))
        label = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"| {size} | {label} | {usual / 2**20:.1f} ({100 * (usual / measured.peak - 1):+.0f}%) | "
              f"{predicted.peak / 2**20:.2f} | {measured.peak / 2**20:.2f} | {error:+.1f}% | "
              f"{predicted.peak_phase} / {measured.phase} |", flush=True)
    print(f"\nworst |planner error|: {worst:.1f}% (target <= 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
