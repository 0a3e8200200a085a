"""8-bit AdamW on pycorpus: optimizer-state bytes, loss and step time against fp32 AdamW and peers.

Run (peers are optional; each one that does not import or step on this machine is reported as skipped):
    /tmp/peers/venv/bin/python benchmarks/bench_adamw8bit.py [--steps 300] [--threads 1]
    (the peer venv: torch 2.13.0 + torchao 0.18 + bitsandbytes 0.50.2 + `pip install --no-deps -e .`)

Every row trains the same freshly initialised reference GPT (GPTConfig(), seed 0) on the same
pycorpus batches (batch 16, 128 tokens, random_windows with one fixed generator) for --steps steps at
lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, constant. "train loss" is the mean of the
last 20 training losses; "val loss" the mean cross-entropy on 64 fixed validation windows
(eval_windows) after training; "Δ" is relative to torch AdamW. "state bytes" is
slimkit.optim.state_bytes after training (every state tensor once; torchao's state subclasses by
their codes, scales and code book). A row whose loss turns NaN stops there and says at which step.
Times are ratios to torch AdamW's: "opt step" the optimizer step alone, "step" forward + backward +
optimizer step on one batch; each of --rounds interleaved rounds times every variant
(slimkit.timing.latency_ms: median of 7 calls after warm-up, fixed threads) and the table gives the
median ratio over rounds, so load from other processes on a shared CPU cancels out as far as it can.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from slimkit.data import pycorpus
from slimkit.data.pycorpus import eval_windows, random_windows
from slimkit.machine import machine_line
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.optim import AdamW, AdamW8bit, state_bytes
from slimkit.timing import fixed_threads, latency_ms

HYPER = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
BATCH, LAST = 16, 20
Factory = Callable[[object], torch.optim.Optimizer]


def bitsandbytes_adamw8bit(params) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, **HYPER)


def torchao_adamw8bit(params) -> torch.optim.Optimizer:
    from torchao.optim import AdamW8bit as AoAdamW8bit

    return AoAdamW8bit(params, **HYPER)


VARIANTS: list[tuple[str, Factory]] = [
    ("torch AdamW (fp32)", lambda params: torch.optim.AdamW(params, **HYPER)),
    ("slimkit AdamW (fp32)", lambda params: AdamW(params, **HYPER)),
    ("slimkit AdamW8bit dynamic, block 256", lambda params: AdamW8bit(params, **HYPER)),
    ("slimkit AdamW8bit dynamic, block 2048", lambda params: AdamW8bit(params, **HYPER, block_size=2048)),
    ("slimkit AdamW8bit linear, block 256", lambda params: AdamW8bit(params, **HYPER, code="linear")),
    ("bitsandbytes AdamW8bit (block 256)", bitsandbytes_adamw8bit),
    ("torchao AdamW8bit (block 256)", torchao_adamw8bit),
]


def loss_of(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def train(make: Factory, batches: list, val: tuple) -> dict:
    """Train a fresh GPT with the optimizer ``make`` builds: losses, state bytes, first-step time."""
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    optimizer = make(model.parameters())
    losses, diverged, first_step = [], None, None
    for index, (x, y) in enumerate(batches):
        start = time.perf_counter()
        loss = loss_of(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        first_step = first_step or time.perf_counter() - start
        losses.append(loss.item())
        if not torch.isfinite(loss):
            diverged = index + 1
            break
    with torch.no_grad():
        val_loss = loss_of(model, *val).item()
    return dict(bytes=state_bytes(optimizer), train=statistics.fmean(losses[-LAST:]), val=val_loss,
                diverged=diverged, first_step=first_step)


def step_time_ratios(makers: dict[str, Factory], batch: tuple, rounds: int, threads: int) -> dict[str, tuple]:
    """(step ratio, optimizer-step ratio) against the first maker, median over interleaved rounds.

    Each round times forward + backward once and every optimizer's step (latency_ms: median of 7
    calls after warm-up), so load from other processes hits every variant alike.
    """
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    optimizers = {}
    for label, make in makers.items():
        replica = copy.deepcopy(model)
        loss_of(replica, *batch).backward()
        optimizers[label] = make(replica.parameters())

    def forward_backward() -> None:
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            loss_of(model, *batch).backward()

    per_round: dict[str, list[tuple[float, float]]] = {label: [] for label in makers}
    for _ in range(rounds):
        fb = latency_ms(forward_backward, threads=threads)
        opt = {label: latency_ms(optimizer.step, threads=threads) for label, optimizer in optimizers.items()}
        base = opt[next(iter(makers))]
        for label in makers:
            per_round[label].append(((fb + opt[label]) / (fb + base), opt[label] / base))
    return {label: tuple(statistics.median(r[i] for r in ratios) for i in (0, 1))
            for label, ratios in per_round.items()}


def relative(value: float, base: float) -> str:
    return f"{(value - base) / base:+.2%}"


def table(results: dict[str, dict], skipped: list[str]) -> list[str]:
    base = next(iter(results.values()))
    lines = ["| optimizer | state bytes | vs fp32 | train loss | Δ train | val loss | Δ val | step time "
             "vs fp32 | opt step vs fp32 |", "|---" * 9 + "|"]
    for label, r in results.items():
        loss = (f"{r['train']:.4f} | {relative(r['train'], base['train'])} | {r['val']:.4f} | "
                f"{relative(r['val'], base['val'])}")
        if r["diverged"]:
            loss = f"NaN at step {r['diverged']} | — | {r['val']:.4f} | —".replace("nan", "NaN")
        lines.append(f"| {label} | {r['bytes']:,} | {r['bytes'] / base['bytes']:.3f} | {loss} | "
                     f"{r['step']:.2f}x | {r['opt']:.2f}x |")
    lines += [f"| {reason} | — | — | — | — | — | — | — | — |" for reason in skipped]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    corpus, generator = pycorpus(), torch.Generator().manual_seed(0)
    block = GPTConfig().block_size
    batches = [random_windows(corpus.train, BATCH, block, generator) for _ in range(args.steps)]
    val = eval_windows(corpus.val, block, 64)
    print(machine_line(args.threads))
    load_start, wall_start = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results, skipped = {}, []
    with fixed_threads(args.threads):
        for label, make in VARIANTS:
            try:
                results[label] = train(make, batches, val)
            except Exception as error:  # a peer that does not import or step here is skipped, with why
                skipped.append(f"{label}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
        makers = {label: make for label, make in VARIANTS if label in results}
        ratios = step_time_ratios(makers, batches[0], args.rounds, args.threads)
    for label, (step, opt) in ratios.items():
        results[label].update(step=step, opt=opt)
    print(f"\n### 8-bit AdamW: GPT {sum(p.numel() for p in GPT().parameters()):,} parameters, "
          f"{args.steps} steps of batch {BATCH} x {block} tokens on pycorpus\n")
    print("\n".join(table(results, skipped)))
    firsts = ", ".join(f"{label} {r['first_step']:.1f} s" for label, r in results.items() if r["first_step"] > 2)
    print(f"\nStarted {wall_start}; 1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end.")
    if firsts:
        print(f"First step (compilation, not in the medians): {firsts}.")
    print(f"\nReproduce: /tmp/peers/venv/bin/python benchmarks/bench_adamw8bit.py --steps {args.steps} "
          f"--threads {args.threads} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
