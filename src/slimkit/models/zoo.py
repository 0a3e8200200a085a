"""Train the reference models reproducibly and cache them in the user cache directory.

``reference("cnn")`` trains the model the first time (fixed seeds, fixed recipe) and saves it
as a slimkit artifact under ``$XDG_CACHE_HOME/slimkit`` (else ``~/.cache/slimkit``); later calls
load it in a fraction of a second. The cache key covers the architecture, the recipe, the
Python version (the GPT's corpus is the standard library) and the torch version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.data import digits, pycorpus, random_windows
from slimkit.errors import UserInputError
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.models.resnet import ResNet, ResNetConfig
from slimkit.progress import progress

NAMES = ("mlp", "cnn", "gpt")


@dataclass(frozen=True)
class Recipe:
    """How a reference model is trained: AdamW, linear warm-up then cosine decay."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: int
    seed: int = 0
    threads: int = 2  # fixed so that the result does not depend on the machine's core count


RECIPES = {
    "mlp": Recipe(steps=1500, batch_size=64, lr=3e-3, weight_decay=1e-4, warmup=50),
    "cnn": Recipe(steps=1500, batch_size=64, lr=3e-3, weight_decay=1e-4, warmup=50),
    "gpt": Recipe(steps=1700, batch_size=16, lr=3e-3, weight_decay=0.1, warmup=50),
}


def build(name: str) -> nn.Module:
    """A freshly initialised reference model (seeded)."""
    check_name(name)
    torch.manual_seed(RECIPES[name].seed)
    return {"mlp": lambda: MLP(MLPConfig()), "cnn": lambda: ResNet(ResNetConfig()),
            "gpt": lambda: GPT(GPTConfig())}[name]()


def check_name(name: str) -> None:
    if name not in NAMES:
        raise UserInputError(f"unknown reference model {name!r}; choose one of {', '.join(NAMES)}")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slimkit"


def cache_path(name: str) -> Path:
    """Folder of the cached artifact; its name changes whenever the model or recipe does."""
    key = json.dumps({
        "name": name, "recipe": asdict(RECIPES[name]), "config": asdict(build(name).config),
        "python": platform.python_version(), "torch": torch.__version__.split("+")[0],
    }, sort_keys=True)
    return cache_root() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def reference(name: str, *, retrain: bool = False) -> nn.Module:
    """The trained reference model ``name`` ("mlp", "cnn" or "gpt"), in eval mode.

    >>> model = reference("cnn")  # trains once (about 15 s), then loads from the cache
    """
    from slimkit.io import load, save  # io sits above models; imported late to keep layers clean

    check_name(name)
    path = cache_path(name)
    if path.exists() and not retrain:
        return load(path).eval()
    model, seconds = train_reference(name)
    save(model, path, metrics={"train_seconds": round(seconds, 2), "recipe": asdict(RECIPES[name])})
    return model.eval()


def train_reference(name: str) -> tuple[nn.Module, float]:
    """Train ``name`` from scratch with its recipe; returns the model and the seconds it took."""
    recipe = RECIPES[name]
    model = build(name).train()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    generator = torch.Generator().manual_seed(recipe.seed)
    next_batch = _batches(name, recipe, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe))
    start = time.perf_counter()
    try:
        with progress(range(recipe.steps), desc=f"training {name}", unit="step") as bar:
            for _ in bar:
                x, y = next_batch()
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval(), time.perf_counter() - start


def _lr_factor(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress_frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress_frac))


def _batches(name: str, recipe: Recipe, generator: torch.Generator):
    if name == "gpt":
        data, block = pycorpus().train, GPTConfig().block_size
        return lambda: random_windows(data, recipe.batch_size, block, generator)
    train = digits().train

    def digit_batch():
        idx = torch.randint(0, len(train), (recipe.batch_size,), generator=generator)
        return train.x[idx], train.y[idx]

    return digit_batch
