"""Distillation benchmark: a quarter-size GPT student on pycorpus, and digits with 10% of the labels.

Run: python benchmarks/bench_distill.py [--steps 1000]
Prints markdown tables (the machine on the first line). All quality figures are on held-out data:
validation bits per byte (256 fixed windows) for the GPT, test accuracy for digits. Every student of
a table has the same architecture, initial weights, steps, batches and learning-rate schedule; only
the loss differs. No distillation library installs as a peer here; the baseline is the same student
trained alone.
"""

import argparse
import time

import torch

from slimkit.data import digits
from slimkit.machine import machine_line
from slimkit.distillation import DistillConfig, distill, pseudo_label
from slimkit.models.tasks import get_task
from slimkit.models import zoo
from slimkit.models.spec import from_spec
from slimkit.training import TrainConfig, random_examples, train

STUDENT_GPT = "gpt:n_layer=3,n_head=4,n_embd=64"


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def gpt_table(steps: int) -> None:
    task = get_task("pycorpus")
    teacher = zoo.reference("gpt")
    config = TrainConfig(steps=steps, lr=3e-3, warmup=min(50, steps // 10), weight_decay=0.1, threads=2)
    rows = [("teacher (reference GPT)", params(teacher), task.quality(teacher)["bits_per_byte"], None)]
    variants = [("student alone (cross-entropy)", None),
                ("student + KD (T=1, alpha=0.5)", DistillConfig(temperature=1.0, alpha=0.5)),
                ("student + KD (T=2, alpha=0.9)", DistillConfig(temperature=2.0, alpha=0.9)),
                ("student + KD + features (blocks.2 <- blocks.3, cosine)",
                 DistillConfig(temperature=1.0, alpha=0.5, features=(("blocks.2", "blocks.3"),), feature_weight=1.0,
                               feature_loss="cosine"))]
    for name, distill_config in variants:
        student = from_spec(STUDENT_GPT)
        batches = task.training_batches(student, 16, seed=0)
        start = time.perf_counter()
        if distill_config is None:
            train(student, batches, config)
        else:
            distill(teacher, student, batches, distill_config, config)
        rows.append((name, params(student), task.quality(student)["bits_per_byte"], time.perf_counter() - start))
    alone = rows[1][2]
    print(f"\n### pycorpus: student `{STUDENT_GPT}` ({rows[1][1] / rows[0][1]:.2f}x the teacher's parameters), "
          f"{steps} steps, batch 16 x 128\n")
    print("| model | parameters | val bits/byte | vs student alone | training time (s) |\n|---|---|---|---|---|")
    for name, n, bpb, seconds in rows:
        print(f"| {name} | {n:,} | {bpb:.4f} | {bpb - alone:+.4f} | {'' if seconds is None else f'{seconds:.0f}'} |")


def digits_table(fraction: float, steps: int) -> None:
    task = get_task("digits")
    train_split = digits().train
    generator = torch.Generator().manual_seed(0)
    labelled = []
    for label in range(10):  # stratified: the same fraction of every class
        idx = (train_split.y == label).nonzero().flatten()
        labelled.append(idx[torch.randperm(len(idx), generator=generator)[:max(1, round(fraction * len(idx)))]])
    labelled = torch.cat(labelled)
    unlabelled = torch.ones(len(train_split), dtype=torch.bool)
    unlabelled[labelled] = False
    x_l, y_l, x_u = train_split.x[labelled], train_split.y[labelled], train_split.x[unlabelled]
    config = TrainConfig(steps=steps, lr=3e-3, warmup=50, weight_decay=1e-4, threads=2)

    teacher = from_spec("cnn", seed=1)  # the reference CNN architecture, trained on the labelled tenth only
    train(teacher, random_examples(x_l, y_l, 64), config)
    x_p, y_p = pseudo_label(teacher, x_u, threshold=0.9)
    rows = [("teacher (reference CNN, labels only)", task.quality(teacher)["accuracy"])]
    student_spec = "mlp:hidden=64-32"

    alone = from_spec(student_spec)
    train(alone, random_examples(x_l, y_l, 64), config)
    rows.append(("student, labels only", task.quality(alone)["accuracy"]))

    kd = from_spec(student_spec)  # KD on labelled + unlabelled inputs (unlabelled: -100, KD term only)
    x_all = torch.cat([x_l, x_u])
    y_all = torch.cat([y_l, torch.full((len(x_u),), -100)])
    distill(teacher, kd, random_examples(x_all, y_all, 64), DistillConfig(temperature=4.0, alpha=0.5), config)
    rows.append(("student, KD on labelled + unlabelled inputs", task.quality(kd)["accuracy"]))

    both = from_spec(student_spec)  # pseudo-labels (confidence >= 0.9) as hard labels, plus KD on everything
    y_pseudo = torch.full((len(x_u),), -100)
    keep = torch.isin(torch.arange(len(x_u)), _rows_kept(teacher, x_u, 0.9))
    y_pseudo[keep] = y_p
    distill(teacher, both, random_examples(x_all, torch.cat([y_l, y_pseudo]), 64),
            DistillConfig(temperature=4.0, alpha=0.5), config)
    rows.append(("student, pseudo-labels + KD", task.quality(both)["accuracy"]))

    print(f"\n### digits with {fraction:.0%} of the labels ({len(y_l)} labelled, {len(x_u)} unlabelled; "
          f"{len(y_p)} pseudo-labelled at confidence >= 0.9), student `{student_spec}`, {steps} steps\n")
    print("| model | test accuracy | vs labels-only student |\n|---|---|---|")
    for name, acc in rows:
        print(f"| {name} | {acc:.4f} | {acc - rows[1][1]:+.4f} |")


def _rows_kept(teacher, x, threshold: float) -> torch.Tensor:
    with torch.no_grad():
        confidence = torch.softmax(teacher(x), -1).max(-1).values
    return (confidence >= threshold).nonzero().flatten()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="GPT student steps (default 1000)")
    parser.add_argument("--digits-steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    print(f"Machine: {machine_line(2)}")
    digits_table(0.1, args.digits_steps)
    gpt_table(args.steps)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
