"""LoRA/QLoRA training step time against full fine-tuning and peft's LoRA, on the GPT and on MiniLM.

Run (the peft rows need peft, the peft QLoRA row also bitsandbytes; each missing one is reported):
    python benchmarks/bench_lora.py [--threads 2] [--runs 7] [--rank 8] [--models gpt minilm]

Prints the machine line, one markdown table per model, then the command. A step is forward, loss,
backward, AdamW step (lr 1e-4, over the trainable parameters), zero_grad. Each variant gets 2
warm-up steps; then --runs rounds each time one step of every variant in turn (interleaved, same
batch), and the table gives the median step time and the median over rounds of (variant time /
full fine-tuning time in the same round), so load from other processes cancels out as far as it can.
"peak MiB" = parameters + buffers + optimizer state + the peak of what the step allocates (torch's
profiler, as slimkit.evaluation.bench measures it), measured on one extra step. CPU only.
Models: the reference GPT architecture (fresh, seed 0; pycorpus windows of batch 16 x 128; next-byte
cross-entropy; adapters on every block Linear) and MiniLM (32 real sentences a batch; loss 1 - cosine
of the mean-pooled embedding, dropout on, against the frozen fp32 model's; adapters on query/value).
"trainable %" is against the base model's parameter count (plus the adapters).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.data import minilm, pycorpus, random_windows, sentences
from slimkit.machine import machine_line
from slimkit.evaluation.bench import peak_memory_bytes
from slimkit.models.gpt import GPT, GPTConfig

GPT_TARGETS = ("qkv", "proj", "mlp.0", "mlp.2")  # every Linear of a block; the tied head is left out
MINILM_TARGETS = ("query", "value")


def variants(base: nn.Module, targets: tuple[str, ...], rank: int) -> dict[str, nn.Module]:
    """Full fine-tuning, slimkit LoRA and QLoRA (fp32 and bf16 adapters), peft LoRA and QLoRA where installed."""
    patterns = tuple(f"*.{t}" for t in targets)
    models = {"full fine-tuning (fp32)": copy.deepcopy(base).requires_grad_(True)}
    for label, extra in [("slimkit LoRA", {}), ("slimkit QLoRA (NF4 base, fp32 adapters)", {"base": "nf4"}),
                         ("slimkit QLoRA (NF4 base, bf16 adapters)", {"base": "nf4", "dtype": "bfloat16"})]:
        models[label] = copy.deepcopy(base)
        lora.inject(models[label], LoRAConfig(rank=rank, alpha=2 * rank, targets=patterns, **extra))
    try:
        import peft

        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets))
        models[f"peft {peft.__version__} LoRA"] = peft.get_peft_model(copy.deepcopy(base), config)
    except ImportError:
        print("peft not installed: its rows are left out (pip install peft)")
        return {label: model.train() for label, model in models.items()}
    try:
        import bitsandbytes as bnb

        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets))
        label = f"peft QLoRA (bitsandbytes {bnb.__version__} Linear4bit nf4 bs64, double quant)"
        models[label] = peft.get_peft_model(bnb_nf4_copy(bnb, base, targets), config)
    except ImportError:
        print("bitsandbytes not installed: the peft QLoRA row is left out (pip install bitsandbytes)")
    return {label: model.train() for label, model in models.items()}


def bnb_nf4_copy(bnb, base: nn.Module, targets: tuple[str, ...], compute_dtype: torch.dtype = torch.float32,
                 device: str = "cpu") -> nn.Module:
    """A copy of ``base`` on ``device`` whose targeted Linears are bitsandbytes NF4 layers (QLoRA's storage)."""
    model = copy.deepcopy(base).to(device)
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and any(name.endswith(f".{t}") for t in targets):
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)
            q.weight = bnb.nn.Params4bit(module.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                         blocksize=64, compress_statistics=True)
            if module.bias is not None:
                q.bias = nn.Parameter(module.bias.data.clone(), requires_grad=False)
            model.set_submodule(name, q.to(device))  # moving the layer is what quantizes it
    return model


def gpt_task(generator: torch.Generator):
    model = GPT(GPTConfig())
    data = pycorpus().train
    batches = [random_windows(data, 16, 128, generator) for _ in range(4)]

    def loss(model, batch):
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    return model, batches, loss, GPT_TARGETS


def minilm_task(generator: torch.Generator):
    loaded = minilm()
    texts = sentences()
    starts = torch.randint(0, len(texts) - 32, (4,), generator=generator).tolist()
    batches = [loaded.tokenizer(list(texts[s : s + 32]), padding=True, truncation=True, max_length=128,
                                return_tensors="pt") for s in starts]
    frozen = copy.deepcopy(loaded.model).eval()
    with torch.no_grad():
        batches = [(tokens, pooled(frozen, tokens)) for tokens in batches]

    def loss(model, batch):
        tokens, target = batch
        return (1 - F.cosine_similarity(pooled(model, tokens), target, dim=-1)).mean()

    return loaded.model, batches, loss, MINILM_TARGETS


def pooled(model: nn.Module, batch) -> torch.Tensor:
    hidden = model(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def make_step(model: nn.Module, loss_fn):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch) -> None:
        with torch.enable_grad():  # peak_memory_bytes measures under no_grad
            loss_fn(model, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def bench(title: str, task, rank: int, runs: int, generator: torch.Generator) -> None:
    base, batches, loss_fn, targets = task(generator)
    models = variants(base, targets, rank)
    steps = {label: make_step(model, loss_fn) for label, model in models.items()}
    for step, _ in steps.values():
        for batch in batches[:2]:
            step(batch)
    times = {label: [] for label in steps}
    for i in range(runs):
        for label, (step, _) in steps.items():
            start = time.perf_counter()
            step(batches[i % len(batches)])
            times[label].append(time.perf_counter() - start)
    full = next(iter(times))
    params = sum(p.numel() for p in base.parameters())
    print(f"\n### {title} ({params / 1e6:.1f}M parameters): rank {rank}, adapters on {', '.join(targets)}\n")
    print("| variant | step ms (median) | time / full fine-tuning | trainable params | trainable % | peak MiB |")
    print("|---|---|---|---|---|---|")
    for label, model in models.items():
        step, optimizer = steps[label]
        trainable = lora.trainable_parameters(model)[0]
        total = params + (trainable if trainable != params else 0)
        peak = peak_memory_bytes(model, lambda step=step: step(batches[0])) + optimizer_state_bytes(optimizer)
        ratio = statistics.median(t / f for t, f in zip(times[label], times[full]))
        print(f"| {label} | {statistics.median(times[label]) * 1e3:.1f} | {ratio:.2f} | {trainable:,} | "
              f"{100 * trainable / total:.2f} | {peak / 2**20:.1f} |")


TASKS = {"gpt": ("reference GPT architecture", gpt_task), "minilm": ("MiniLM-L6", minilm_task)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7, help="interleaved timed steps per variant (>= 5)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--models", nargs="+", choices=list(TASKS), default=list(TASKS))
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the table gives medians)")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    for name in args.models:
        title, task = TASKS[name]
        torch.manual_seed(0)
        bench(title, task, args.rank, args.runs, torch.Generator().manual_seed(0))
    print(f"\nReproduce: python benchmarks/bench_lora.py --threads {args.threads} --runs {args.runs} --rank {args.rank} "
          f"--models {' '.join(args.models)}")


if __name__ == "__main__":
    main()
