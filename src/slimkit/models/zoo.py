"""Train the reference models reproducibly and cache them in the user cache directory.

``reference("cnn")`` trains the model the first time (fixed seeds, fixed recipe) and saves it
as a slimkit artifact under ``$XDG_CACHE_HOME/slimkit`` (else ``~/.cache/slimkit``); later calls
load it in a fraction of a second. The cache key covers the architecture, the recipe, the
Python version (the GPT's corpus is the standard library) and the torch version.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from slimkit.data import digits, pycorpus, random_windows
from slimkit.errors import SlimkitError, UserInputError
from slimkit.models import smollm2
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.models.resnet import ResNet, ResNetConfig
from slimkit.training.batches import GeneratorBatches, random_examples

NAMES = ("mlp", "cnn", "gpt")
PRETRAINED = ("smollm2",)  # converted from a package's weights, not trained here


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
        raise UserInputError(f"unknown reference model {name!r}; choose one of {', '.join(NAMES + PRETRAINED)}")


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
    """The trained reference model ``name`` ("mlp", "cnn" or "gpt"), or the pretrained "smollm2", in eval mode.

    >>> model = reference("cnn")  # trains once (about 15 s), then loads from the cache
    """
    if name == "smollm2":
        return smollm2.load(hf_folder(name))[0]
    check_name(name)

    def make():
        model, seconds = train_reference(name)
        return model, {"train_seconds": round(seconds, 2), "recipe": asdict(RECIPES[name])}

    return cached(cache_path(name), make, rebuild=retrain)


def cached(path: Path, make, *, rebuild: bool = False) -> nn.Module:
    """The model in the cache entry ``path``; ``make() -> (model, metrics)`` builds it when the entry is
    missing or unreadable (said in one line). Entries are written atomically under a lock: a second
    process waits and then loads what the first one built."""
    from slimkit.atomic import locked
    from slimkit.io import save

    model = None if rebuild else _cached_model(path, quiet=True)
    if model is not None:
        return model
    with locked(path, wait=True):
        model = None if rebuild else _cached_model(path, quiet=False)  # another process may have built it
        if model is None:
            model, metrics = make()
            save(model, path, metrics=metrics)
    return model.eval()


def _cached_model(path: Path, *, quiet: bool) -> nn.Module | None:
    from slimkit.io import load

    if not path.exists():
        return None
    try:
        return load(path).eval()
    except SlimkitError as exc:
        if not quiet:
            print(f"slimkit: the cache entry {path} is unreadable ({exc}); rebuilding it", file=sys.stderr)
        return None


def hf_folder(name: str) -> Path:
    """The Hugging Face folder of a pretrained zoo model ("smollm2"), converted into the cache the first time."""
    if name not in PRETRAINED:
        raise UserInputError(f"{name!r} is not a pretrained zoo model; choose one of {', '.join(PRETRAINED)}")
    return smollm2.folder(cache_root())


def train_reference(name: str) -> tuple[nn.Module, float]:
    """Train ``name`` from scratch with its recipe (through ``slimkit.train``); returns the model and seconds."""
    from slimkit.training import TrainConfig, train  # layer 3; models sit in layer 5 and may use it

    recipe = RECIPES[name]
    model = build(name)
    config = TrainConfig(steps=recipe.steps, lr=recipe.lr, weight_decay=recipe.weight_decay, warmup=recipe.warmup,
                         clip_grad_norm=1.0, seed=recipe.seed, threads=recipe.threads)
    result = train(model, _batches(name, recipe), config)
    return model.eval(), result.seconds


def _batches(name: str, recipe: Recipe) -> GeneratorBatches:
    if name == "gpt":
        data, block = pycorpus().train, GPTConfig().block_size
        return GeneratorBatches(lambda g: random_windows(data, recipe.batch_size, block, g), recipe.seed)
    train_split = digits().train
    return random_examples(train_split.x, train_split.y, recipe.batch_size, recipe.seed)
