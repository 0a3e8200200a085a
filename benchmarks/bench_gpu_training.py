"""Training on one CUDA GPU: precision, SDPA flash, checkpointing, 8-bit AdamW, LoRA/QLoRA vs peft.

    python benchmarks/bench_gpu_training.py [--layers 16] [--width 1024] [--batch 8] [--seq 1024]

A ~200M-parameter byte-level GPT (16 x 1024 by default) trains on real pycorpus windows with
slimkit's own ``train_step`` (the loop ``slimkit.train`` runs). Per configuration: median step
time over ``--steps`` steps after 3 warm-up steps (CUDA-synchronised), tokens/s, and the peak of
``torch.cuda.max_memory_allocated`` during the timed steps; ratios against the fp32 row (precision
table) and against full bf16 fine-tuning (adapter table). Rows marked "flash" run inside
``sdpa_kernel(FLASH_ATTENTION)`` alone, so they would fail if the flash backend could not run.
Targets (issue 7): bf16 >= 5x fp32 throughput (H100 anchor 6.4x); LoRA step no slower than full
bf16 fine-tuning (peft: 1.4x on an H100); checkpointing anchor 9.2 -> 5.9 GiB at +74% (217M GPT).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_lora import bnb_nf4_copy  # the same NF4 copy as the CPU benchmark (benchmarks/ is on sys.path)
from slimkit.adapters import LoRAConfig, lora
from slimkit.data import pycorpus, random_windows
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.optim import AdamW8bit
from slimkit.training import TrainConfig, enable_checkpointing
from slimkit.training.loop import TrainState, cross_entropy_loss, train_step
from slimkit.training.precision import Precision

GiB = 2**30


def timed(model, optimizer, precision_name: str, batch, steps: int, flash: bool) -> tuple[float, int]:
    """(median step seconds, peak bytes) of slimkit's train_step."""
    device = torch.device("cuda")
    precision = Precision.create(precision_name, device)
    state = TrainState(model, optimizer, TrainConfig(precision=precision_name))
    model.train()
    attention = sdpa_kernel([SDPBackend.FLASH_ATTENTION]) if flash else contextlib.nullcontext()
    times = []
    with attention, precision.matmul_mode():
        for i in range(3 + steps):
            if i == 3:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, [batch], cross_entropy_loss, precision, state, ())
            torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times), torch.cuda.max_memory_allocated()


def fresh(config: GPTConfig):
    torch.manual_seed(0)
    return GPT(config).cuda()


def adamw(params, kind: str = "adamw"):
    params = [p for p in params if p.requires_grad]
    if kind == "adamw8bit":
        return AdamW8bit(params, lr=1e-4)
    if kind == "bnb8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-4)
    return torch.optim.AdamW(params, lr=1e-4, fused=kind == "fused")


def row(label: str, seconds: float, peak: int, tokens: int, base: float | None, extra: str = "") -> None:
    ratio = f"{base / seconds:.2f}x" if base else "1.00x"
    print(f"| {label} | {1e3 * seconds:.1f} | {tokens / seconds:,.0f} | {ratio} | {peak / GiB:.2f} |{extra}",
          flush=True)


def precision_table(config, batch, steps) -> None:
    tokens = batch[0].numel()
    print("| configuration | step ms | tokens/s | throughput vs fp32 | peak GiB |\n|---|---|---|---|---|")
    base = None
    for label, precision, ckpt, optimizer, flash in [
        ("fp32 (no TF32), AdamW foreach", "fp32", None, "adamw", False),
        ("tf32, AdamW foreach", "tf32", None, "adamw", False),
        ("bf16 autocast, flash, AdamW foreach", "bf16", None, "adamw", True),
        ("bf16 autocast, flash, AdamW fused", "bf16", None, "fused", True),
        ("bf16 autocast, flash, full checkpointing", "bf16", "blocks", "adamw", True),
        ("bf16 autocast, flash, selective (MLPs)", "bf16", ["blocks.*.mlp"], "adamw", True),
        ("bf16 autocast, flash, selective (attention)", "bf16", ["blocks.*.attn"], "adamw", True),
        ("fp16 autocast + GradScaler, flash", "fp16", None, "adamw", True),
        ("bf16 autocast, flash, slimkit AdamW8bit", "bf16", None, "adamw8bit", True),
        ("bf16 autocast, flash, bitsandbytes AdamW8bit", "bf16", None, "bnb8bit", True),
    ]:
        model = fresh(config)
        if ckpt:
            enable_checkpointing(model, ckpt)
        try:
            optim = adamw(model.parameters(), optimizer)
        except ImportError:
            print(f"| {label} | not installed | | | |")
            continue
        seconds, peak = timed(model, optim, precision, batch, steps, flash)
        base = base or seconds
        row(label, seconds, peak, tokens, base)
        del model, optim
        torch.cuda.empty_cache()


def adapter_table(config, batch, steps, profile: bool = False) -> None:
    tokens = batch[0].numel()
    targets = ("qkv", "proj", "mlp.0", "mlp.2")
    print("\n| fine-tuning (bf16 autocast, flash) | step ms | tokens/s | step time vs full | peak GiB | trainable |\n"
          "|---|---|---|---|---|---|")
    base_model = fresh(config)
    models = {"full fine-tuning (AdamW fused)": base_model}
    for label, base in [("slimkit LoRA r=8 (float base)", "float"), ("slimkit QLoRA r=8 (NF4 base, DQ)", "nf4")]:
        model = copy.deepcopy(base_model)
        lora.inject(model, LoRAConfig(rank=8, alpha=16, targets=tuple(f"*.{t}" for t in targets), base=base))
        models[label] = model
    try:
        import peft

        models[f"peft {peft.__version__} LoRA r=8"] = peft.get_peft_model(
            copy.deepcopy(base_model), peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(targets)))
        import bitsandbytes as bnb

        models[f"peft QLoRA r=8 (bitsandbytes {bnb.__version__} NF4, DQ)"] = peft.get_peft_model(
            bnb_nf4_copy(bnb, base_model, targets, torch.bfloat16, "cuda"), peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(targets)))
    except ImportError as exc:
        print(f"| peft / bitsandbytes rows | not installed ({exc}) | | | | |")
    full = None
    for label, model in models.items():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in base_model.parameters())
        optimizer = adamw(model.parameters(), "fused")
        seconds, peak = timed(model, optimizer, "bf16", batch, steps, flash=True)
        full = full or seconds
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                timed(model, optimizer, "bf16", batch, 1, flash=True)
            print(f"{label}:\n" + prof.key_averages().table(sort_by="cuda_time_total", row_limit=12), flush=True)
        print(f"| {label} | {1e3 * seconds:.1f} | {tokens / seconds:,.0f} | {seconds / full:.2f}x | "
              f"{peak / GiB:.2f} | {100 * trainable / total:.2f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="also print the top CUDA kernels of the adapter rows")
    parser.add_argument("--only", choices=("precision", "adapters"), help="run one table only")
    args = parser.parse_args()
    config = GPTConfig(n_layer=args.layers, n_head=args.width // 64, n_embd=args.width, block_size=args.seq)
    batch = tuple(t.cuda() for t in random_windows(pycorpus().train, args.batch, args.seq,
                                                   torch.Generator().manual_seed(0)))
    params = sum(p.numel() for p in GPT(config).parameters())
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; GPT {args.layers} x {args.width} "
          f"({params / 1e6:.0f}M parameters), batch {args.batch} x {args.seq} tokens, median of {args.steps} steps\n")
    if args.only != "adapters":
        precision_table(config, batch, args.steps)
    if args.only != "precision":
        adapter_table(config, batch, args.steps, args.profile)


if __name__ == "__main__":
    main()
