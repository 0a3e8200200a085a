"""The one table that wires slimkit's techniques: each registers its name, config class, apply function,
what it needs (calibration data, a training loop) and how a command-line verb builds its config.

The CLI verbs, recipe steps, the search space and the demo's variants all apply a technique through
``apply``; none of them knows a technique by its config type. Data comes in as objects (``Inputs``):
a source of calibration batches and of training batches (a task object from ``slimkit.models.tasks``,
or anything with the same two methods), so no technique here reaches for a data set by name.

Adding a technique is one module (its config and apply function) plus one ``register`` call::

    register(Technique("factorize", LowRankConfig, apply_factorize, recipe=True, from_args=factorize_from_args))

>>> applied = apply(model, "quantize", WeightQuantConfig("int4", method="gptq"),
...                 Inputs(calib=get_task("pycorpus")))  # doctest: +SKIP
>>> applied.model is model  # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from slimkit.errors import UserInputError


class DataSource(Protocol):
    """Where a technique's data comes from; the zoo's task objects are data sources."""

    def calibration(self, batches: int) -> list:
        """``batches`` model inputs drawn from training data (never from evaluation data)."""

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        """A resumable source of (inputs, targets) batches, for ``slimkit.train``."""


@dataclass(frozen=True)
class Batches:
    """A data source over calibration batches already drawn (e.g. once for a whole search)."""

    batches: tuple

    def calibration(self, batches: int) -> list:
        return list(self.batches[:batches])

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        raise UserInputError("these batches calibrate only; give a task for training data")


@dataclass(frozen=True)
class Inputs:
    """What a technique's apply function may take besides the model and its config; the caller builds it.

    data: training batches (fine-tuning, distillation, QAT, LoRA; labelled calibration of Taylor pruning).
    calib: calibration batches (GPTQ/AWQ, static activation ranges, data-driven pruning); None: ``data``.
    train: the training of a technique that trains (QAT, distillation, LoRA, DP-SGD); None: TrainConfig().
    batch_size: training batch size.
    student: distillation: the student model, or a function that builds it from the teacher.
    examples: (x, y) records of the techniques that sample single examples (DP-SGD, federated averaging).
    paths: keyword arguments of ``choose_paths`` run after weight quantization; None leaves layers dequantizing.
    """

    data: DataSource | None = None
    calib: DataSource | None = None
    train: Any = None
    batch_size: int = 64
    student: Any = None
    examples: Any = None
    paths: dict | None = field(default_factory=dict)

    def calibration(self, config) -> list | None:
        """The calibration batches ``config`` asks for (its ``calibration_batches``), or None if it needs none."""
        if not needs_calibration(config):
            return None
        source = self.calib or self.data
        if source is None:
            raise UserInputError(f"{type(config).__name__} needs calibration data; give a task to draw it from "
                                 "(on the command line, --calib)")
        return source.calibration(config.calibration_batches)

    def training(self, model: nn.Module, seed: int):
        """Training batches for ``model``; a clear error where no data was given."""
        if self.data is None:
            raise UserInputError("this technique trains: give a task whose training data it uses")
        return self.data.training_batches(model, self.batch_size, seed)


def needs_calibration(config) -> bool:
    """Whether ``config`` needs calibration data (every config answers through its ``needs_calibration``)."""
    return bool(getattr(config, "needs_calibration", False))


@dataclass(frozen=True)
class Applied:
    """What applying a technique gave: the model (the same object, or a new one such as a student) and the
    technique's own report (PruneReport, LowRankReport, TrainResult, path entries; None where it has none)."""

    model: nn.Module
    report: Any = None


@dataclass(frozen=True)
class Technique:
    """One technique as the rest of slimkit sees it.

    name: the recipe step key and the name callers apply it by.
    config: its config class (to_dict/from_dict).
    apply: ``apply(model, config, inputs) -> Applied``.
    trains: whether it runs a training loop, or a function of the config saying so (QAT does, PTQ does not).
    recipe: whether recipe YAML may name it as a step.
    patterned: it selects layers by include/exclude, so recipe steps may give per-layer overrides.
    from_args: builds the config from a CLI verb's parsed options (None: no verb builds it alone).
    """

    name: str
    config: type
    apply: Callable[[nn.Module, Any, Inputs], Applied]
    trains: bool | Callable[[Any], bool] = False
    recipe: bool = False
    patterned: bool = False
    from_args: Callable[[Any], Any] | None = None

    def needs_training(self, config) -> bool:
        return self.trains(config) if callable(self.trains) else self.trains


_REGISTRY: dict[str, Technique] = {}


def register(technique: Technique) -> Technique:
    """Add ``technique``; a second registration under the same name is refused."""
    if technique.name in _REGISTRY:
        raise UserInputError(f"a technique named {technique.name!r} is already registered")
    _REGISTRY[technique.name] = technique
    return technique


def get(name: str) -> Technique:
    """The registered technique called ``name``."""
    _load_builtins()
    if name not in _REGISTRY:
        raise UserInputError(f"unknown technique {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def techniques(*, recipe: bool | None = None) -> dict[str, Technique]:
    """{name: technique} in registration order; ``recipe=True``: only those recipe steps may name."""
    _load_builtins()
    return {n: t for n, t in _REGISTRY.items() if recipe is None or t.recipe == recipe}


def for_config(config) -> Technique:
    """The technique registered for ``config``'s type; an error where none or several are (name one)."""
    found = [t for t in techniques().values() if type(config) is t.config]
    if len(found) != 1:
        names = ", ".join(t.name for t in found) or "none"
        raise UserInputError(f"{type(config).__name__} is taken by {names}; name the technique to apply")
    return found[0]


def apply(model: nn.Module, name: str, config, inputs: Inputs = Inputs()) -> Applied:
    """Technique ``name`` applied to ``model`` with ``config``: the resulting model and the technique's report."""
    technique = get(name)
    if not isinstance(config, technique.config):
        raise UserInputError(f"technique {name!r} takes a {technique.config.__name__}, not a "
                             f"{type(config).__name__}")
    return technique.apply(model, config, inputs)


def config_from_args(name: str, args):
    """The config of technique ``name`` built from a CLI verb's parsed options."""
    technique = get(name)
    if technique.from_args is None:
        raise UserInputError(f"technique {name!r} has no command-line options")
    return technique.from_args(args)


def _load_builtins() -> None:
    import slimkit.techniques  # noqa: F401 - registers slimkit's own techniques on first import


__all__ = ["Applied", "Batches", "DataSource", "Inputs", "Technique", "apply", "config_from_args", "for_config", "get", "needs_calibration",
           "register", "techniques"]
