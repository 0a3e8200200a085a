"""Which techniques to turn on so a training step fits a memory budget, cheapest first."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from slimkit.errors import UserInputError
from slimkit.memory.presets import ModelShape
from slimkit.memory.setup import TrainSetup
from slimkit.memory.timeline import Plan, plan

# What each change costs, and a score to rank combinations by (lower is cheaper). Step-time
# figures are the usual ones (H100 anchors from issue 7 where measured there).
COSTS = {
    "precision=amp-bf16": (0.0, "none on GPUs with bf16 (faster than fp32); fp32 master weights keep accuracy"),
    "precision=bf16": (2.0, "pure bf16 weights: small updates can round away; watch the loss"),
    "checkpointing=selective": (1.5, "recomputes each MLP in backward: roughly +15-25% step time"),
    "checkpointing=full": (3.0, "recomputes each block in backward: +33% compute (+74% measured on an H100)"),
    "optimizer=adamw8bit": (1.0, "8-bit moments: loss within ~2% of fp32 AdamW; a little slower per step"),
    "lora": (5.0, "trains low-rank adapters (<1% of weights) instead of every weight: a different fine-tune"),
    "qlora": (7.0, "LoRA over an NF4 base (~4.13 bits/weight): dequantization each step, some quality loss"),
}
LORA_RANK = 16  # the rank the recommendation proposes (QLoRA's paper uses 64 on 65B; 16 is a common default)

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


@dataclass(frozen=True)
class Recommendation:
    """The set-up to use, what changed from the requested one with the cost of each, and its plan."""

    setup: TrainSetup
    changes: list[tuple[str, str]]
    plan: Plan


def parse_bytes(text: str) -> float:
    """Bytes in ``text``: decimal units (GB = 1e9) or binary ones (GiB = 2**30).

    >>> parse_bytes("24GB"), parse_bytes("80 GiB")
    (24000000000.0, 85899345920.0)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise UserInputError(f"budget {text!r} is not a size; write e.g. 24GB, 80GiB or 512MB")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def recommend(shape: ModelShape, setup: TrainSetup, budget: float) -> Recommendation | None:
    """The cheapest variation of ``setup`` whose predicted peak fits ``budget`` bytes, or None.

    Searches precision, checkpointing, 8-bit AdamW, LoRA/QLoRA and smaller micro-batches with
    gradient accumulation keeping the effective batch.

    >>> from slimkit.memory import shape_of
    >>> found = recommend(shape_of("llama-7b"), TrainSetup(batch=4, seq=2048, device="cuda"), 24e9)
    >>> [change for change, cost in found.changes]
    ['precision=amp-bf16', 'qlora rank=16', 'micro-batch 1 x 4 accumulation steps']
    """
    best = None
    for candidate, changes in _candidates(setup):
        p = plan(shape, candidate)
        if p.peak > budget:
            continue
        key = (_cost(setup, candidate), p.peak)
        if best is None or key < best[0]:
            best = (key, Recommendation(candidate, changes, p))
    return None if best is None else best[1]


def _candidates(setup: TrainSetup):
    precisions = [setup.precision] + [p for p in ("amp-bf16", "bf16") if p != setup.precision]
    checkpointing = [setup.checkpointing] + [c for c in ("selective", "full") if c != setup.checkpointing]
    optimizers = [setup.optimizer] + (["adamw8bit"] if setup.optimizer.startswith("adamw") else [])
    adapters = [(setup.lora_rank, setup.qlora)] + ([(LORA_RANK, False), (LORA_RANK, True)] if not setup.lora else [])
    batches = sorted({setup.batch >> k for k in range(setup.batch.bit_length()) if setup.batch >> k}, reverse=True)
    for precision, ckpt, optimizer, (rank, qlora), batch in itertools.product(
            precisions, checkpointing, optimizers, adapters, batches):
        changed = setup.replace(precision=precision, checkpointing=ckpt, optimizer=optimizer, lora_rank=rank,
                                qlora=qlora, batch=batch, accumulate=setup.accumulate * setup.batch // batch)
        yield changed, _changes(setup, changed)


def _changes(old: TrainSetup, new: TrainSetup) -> list[tuple[str, str]]:
    changes = []
    for field in ("precision", "checkpointing", "optimizer"):
        if getattr(old, field) != getattr(new, field):
            name = f"{field}={getattr(new, field)}"
            changes.append((name, COSTS.get(name, (0, "no cost"))[1]))
    if new.lora and not old.lora:
        name = "qlora" if new.qlora else "lora"
        changes.append((f"{name} rank={new.lora_rank}", COSTS[name][1]))
    if new.batch != old.batch:
        changes.append((f"micro-batch {new.batch} x {new.accumulate} accumulation steps",
                        f"same effective batch and result; {old.batch // new.batch}x more, smaller steps "
                        "(lower GPU utilisation)"))
    return changes


def _cost(old: TrainSetup, new: TrainSetup) -> float:
    """Score of going from ``old`` to ``new``: the COSTS of each change, plus 0.5 per halving of
    the micro-batch."""
    score = sum(COSTS[f"{f}={getattr(new, f)}"][0] for f in ("precision", "checkpointing", "optimizer")
                if getattr(old, f) != getattr(new, f) and f"{f}={getattr(new, f)}" in COSTS)
    if new.lora and not old.lora:
        score += COSTS["qlora" if new.qlora else "lora"][0]
    return score + 0.5 * (old.batch // new.batch).bit_length() - 0.5
