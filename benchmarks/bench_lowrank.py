"""Low-rank factorization with its parameters halved, before and after a short recovery fine-tune.

Run (about 5 minutes on 2 cores; the reference GPT trains once, ~160 s, if not cached):
    python benchmarks/bench_lowrank.py [--threads 2] [--runs 9] [--gpt-steps 300] [--minilm-steps 150]

Prints the machine line, then one markdown table per model. Every figure comes from
``slimkit.evaluation.evaluate`` (quality, parameters, artifact bytes, latency: median of --runs
calls after warm-up at a fixed thread count), except "latency ratio (interleaved)": the median over
--runs rounds, each timing every variant in turn (median of 5 calls), of its time over the
original's in the same round, which cancels load from other processes far better on a shared
machine. Ratios are against the original model.
- MiniLM: every Linear of the encoder factorized with param_budget=0.5 (each layer keeps at most
  half its weights). Fidelity = the minilm task's cosine to the fp32 embeddings of the 400 fixed
  evaluation sentences. The fine-tune matches the fp32 teacher's mean-pooled sentence embeddings
  (loss 1 - cosine, written here as a loss_fn for ``slimkit.train``: ``slimkit.distill`` distils
  logits and module outputs, not pooled embeddings; dropout off) on comment lines of pycorpus's training
  split (--sentences distinct ones, cycled), never the evaluation sentences.
- GPT: the reference GPT's MLP Linears factorized with param_budget=0.5; bits per byte on the
  pycorpus validation windows, then --gpt-steps of fine-tuning on pycorpus training windows,
  either plain next-byte cross-entropy or ``slimkit.distill`` from the original model (KD,
  T=2, alpha=0.5), and, as a baseline, the same factorized shapes with random factors
  trained for the same steps (what the SVD initialisation is worth), and, as a control, the
  unfactorized reference GPT fine-tuned the same way (what the extra steps alone are worth).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.data import minilm, sentences
from slimkit.machine import machine_line
from slimkit.distillation import DistillConfig, distill
from slimkit.models.tasks import evaluate
from slimkit.models.tasks import calibration_sentences, get_task
from slimkit.lowrank import LowRankConfig, LowRankLinear, factorize
from slimkit.models import zoo
from slimkit.timing import latency_ms
from slimkit.training import TrainConfig, train

HALF = 0.5


def interleaved_ratios(task: str, models: list[nn.Module], threads: int, rounds: int) -> list[float]:
    """Median over ``rounds`` of (latency of each model / latency of models[0]) measured in the same round.

    The rounds take the models in turn, so that load from other processes on a shared machine
    falls on all of them alike and cancels in the ratio as far as it can.
    """
    calls = [get_task(task).example_call(model.eval(), get_task(task).default_batch) for model in models]
    per_round = []
    for _ in range(rounds):
        times = [latency_ms(call, runs=5, warmup=1, threads=threads) for call in calls]
        per_round.append([t / times[0] for t in times])
    return [statistics.median(r[i] for r in per_round) for i in range(len(models))]


def print_rows(task: str, rows: list[tuple], args) -> None:
    """rows: (label, EvalRecord, model, weights, fine-tune seconds); the first row is the original."""
    ratios = interleaved_ratios(task, [r[2] for r in rows], args.threads, args.runs)
    for (label, record, _, weights, seconds), ratio in zip(rows, ratios):
        print(row(label, record, rows[0][1], weights, seconds, ratio))


def row(label: str, record, base, weights: int, seconds: float | None, ratio: float) -> str:
    other = ", ".join(f"{k} {v:.4f}" for k, v in record.quality.items() if k != record.metric)
    return (f"| {label} | {record.params:,} | {weights:,} | {record.value:.4f} | {other or '—'} | "
            f"{record.artifact_bytes / base.artifact_bytes:.3f} | {record.latency_ms:.2f} | {ratio:.3f} | "
            f"{'—' if seconds is None else f'{seconds:.0f}'} |")


def header(metric: str, weights: str) -> str:
    return (f"| variant | params | {weights} | {metric} | other quality | bytes ratio | latency ms | latency ratio "
            "(interleaved) | fine-tune s |\n|---|---:|---:|---:|---|---:|---:|---:|---:|")


def linear_weights(model: nn.Module, part: str) -> int:
    """Weights of the Linear layers (plain, or the factors of factorized ones) whose name contains ``part``."""
    return sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear) and part in name)


def minilm_table(args) -> None:
    loaded = minilm()
    teacher, tokenizer = loaded.model.eval(), loaded.tokenizer
    common = dict(threads=args.threads, runs=args.runs)
    base = evaluate(teacher, "minilm", name="fp32", **common)
    student = copy.deepcopy(teacher)
    report = factorize(student, LowRankConfig(param_budget=HALF, include=("encoder.*",)))
    factorized = evaluate(student, "minilm", name="low-rank", **common)
    for module in student.modules():  # the teacher is deterministic; matching it goes better without dropout
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    start = time.perf_counter()
    sentences_used = min(args.minilm_steps * args.batch, args.sentences)
    train(student, embedding_batches(teacher, tokenizer, args.batch, sentences_used), TrainConfig(
        steps=args.minilm_steps, lr=args.minilm_lr, warmup=min(10, args.minilm_steps // 5), threads=args.threads), loss_fn=embedding_loss)
    seconds = time.perf_counter() - start
    tuned = evaluate(student, "minilm", name="low-rank + fine-tune", **common)
    print(f"\n### MiniLM, encoder Linears at param_budget={HALF} ({len(report.factorized)} layers, weights "
          f"{report.params_before:,} -> {report.params_after:,}; fidelity to fp32 on 400 sentences)\n")
    print(header("cosine mean", "encoder Linear weights"))
    print_rows("minilm", [
        ("fp32 all-MiniLM-L6-v2", base, teacher, linear_weights(teacher, "encoder."), None),
        ("low-rank (SVD), no fine-tune", factorized, student, linear_weights(student, "encoder."), None),
        (f"low-rank + {args.minilm_steps} steps x {args.batch} sentences ({sentences_used} distinct) matching fp32 "
         "embeddings", tuned, student, linear_weights(student, "encoder."), seconds)], args)


def embedding_batches(teacher: nn.Module, tokenizer, batch: int, count: int) -> list:
    """(tokens, fp32 teacher embeddings) for ``count`` comment lines of pycorpus's training split."""
    held_out = set(sentences())
    texts = [t for t in calibration_sentences(count + len(held_out)) if t not in held_out][:count]
    batches = []
    with torch.no_grad():
        for i in range(0, len(texts) - batch + 1, batch):
            tokens = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            batches.append((tokens, pooled(teacher, tokens)))
    return batches


def pooled(model: nn.Module, tokens) -> torch.Tensor:
    """Mean-pooled token states over real tokens (B, H), as the sentence-transformers recipe embeds."""
    hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def embedding_loss(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    """Summed 1 - cosine between the student's and the teacher's sentence embeddings."""
    tokens, target = batch
    return (1 - F.cosine_similarity(pooled(model, tokens), target, dim=-1)).sum(), len(target)


def gpt_table(args) -> None:
    task, teacher = get_task("pycorpus"), zoo.reference("gpt")
    common = dict(threads=args.threads, runs=args.runs)
    base = evaluate(teacher, "pycorpus", name="fp32", **common)
    config = LowRankConfig(param_budget=HALF, include=("blocks.*.mlp.*",))
    student = copy.deepcopy(teacher)
    report = factorize(student, config)
    rows = [("reference GPT", base, teacher, linear_weights(teacher, ".mlp."), None),
            ("low-rank (SVD), no fine-tune", evaluate(student, "pycorpus", **common), student,
             linear_weights(student, ".mlp."), None)]
    train_config = TrainConfig(steps=args.gpt_steps, lr=args.gpt_lr, warmup=min(20, args.gpt_steps // 5), threads=args.threads)
    for label, how in [("cross-entropy", "ce"), ("slimkit.distill from the original", "kd"),
                       ("random factors (same shapes), cross-entropy", "random"),
                       ("cross-entropy", "control")]:
        model = copy.deepcopy(teacher).requires_grad_(True) if how == "control" else copy.deepcopy(student)
        if how == "random":
            for layer in model.modules():
                if isinstance(layer, LowRankLinear):
                    for linear in (layer.first, layer.second):
                        nn.init.normal_(linear.weight, std=0.02)
                        if linear.bias is not None:
                            nn.init.zeros_(linear.bias)
        batches = task.training_batches(model, 16, seed=1)
        start = time.perf_counter()
        if how == "kd":
            distill(teacher, model, batches, DistillConfig(temperature=2.0, alpha=0.5), train_config)
        else:
            train(model, batches, train_config)
        seconds = time.perf_counter() - start
        prefix = "control: reference GPT (not factorized)" if how == "control" else "low-rank"
        rows.append((f"{prefix} + {args.gpt_steps} steps, {label}", evaluate(model, "pycorpus", **common),
                     model, linear_weights(model, ".mlp."), seconds))
    print(f"\n### GPT, MLP Linears at param_budget={HALF} ({len(report.factorized)} layers, weights "
          f"{report.params_before:,} -> {report.params_after:,}; pycorpus validation bits per byte)\n")
    print(header("bits/byte", "MLP weights"))
    print_rows("pycorpus", rows, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=9, help="timed calls per latency median (>= 5)")
    p.add_argument("--gpt-steps", type=int, default=300)
    p.add_argument("--gpt-lr", type=float, default=3e-4)
    p.add_argument("--minilm-steps", type=int, default=150)
    p.add_argument("--minilm-lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=32, help="sentences per MiniLM fine-tuning batch")
    p.add_argument("--sentences", type=int, default=1024, help="distinct fine-tuning sentences (cycled)")
    p.add_argument("--models", nargs="+", default=["minilm", "gpt"], choices=["minilm", "gpt"])
    args = p.parse_args()
    torch.manual_seed(0)
    print(machine_line(args.threads))
    started = time.perf_counter()
    for name in args.models:
        {"minilm": minilm_table, "gpt": gpt_table}[name](args)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
