"""Apply one recipe step to a model with the technique's own function (nothing re-implemented here).

>>> model = apply_step(model, step, task="digits", calib="digits")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

from torch import nn

from slimkit.errors import UserInputError
from slimkit.recipes.recipe import Step


def apply_step(model: nn.Module, step: Step, task: str | None, calib: str | None, *,
               measure_paths: bool = True) -> nn.Module:
    """``model`` after ``step`` (the same object, or the student of a distill step).

    ``task``: training data of finetune/distill/QAT steps; ``calib``: calibration data of quantization
    and data-driven pruning (None for steps that need no data, such as magnitude pruning or
    factorization). ``measure_paths``: after weight quantization, time each layer's execution
    paths and keep the fastest (the search leaves it out: it changes speed, not quality or bytes).
    """
    from slimkit.models.tasks import get_task

    kind = step.technique
    if kind == "distill":
        return _distill(model, step, task)
    if kind == "finetune":
        from slimkit.training.finetune import finetune_masked

        # masks of an earlier prune step stay applied (pruned weights stay zero)
        finetune_masked(model, get_task(task).training_batches(model, step.batch_size, step.config.seed), step.config)
        return model
    for config in step.configs():
        _APPLY[kind](model, config, task, calib, step)
    if kind == "quantize" and measure_paths:
        from slimkit.quantization.paths import choose_paths

        choose_paths(model)
    return model


def _prune(model, config, task, calib, step) -> None:
    from slimkit.pruning import prune
    from slimkit.pruning.recipe import task_calibration

    prune(model, config, task_calibration(model, config, calib))


def _factorize(model, config, task, calib, step) -> None:
    from slimkit.lowrank import factorize

    factorize(model, config)


def _quantize(model, config, task, calib, step) -> None:
    from slimkit.models.tasks import get_task
    from slimkit.quantization import quantize

    quantize(model, config, calib=get_task(calib).calibration(config.calib_samples) if config.method != "rtn" else None)


def _quantize_activations(model, config, task, calib, step) -> None:
    from slimkit.models.tasks import get_task
    from slimkit.quantization import QATSchedule, convert, prepare_qat, quantize
    from slimkit.training import TrainConfig, train

    if config.mode != "qat":
        quantize(model, config, calib=get_task(calib).calibration(config.calib_batches)
                 if config.needs_calibration else None)
        return
    train_config = step.train or TrainConfig()
    prepare_qat(model, config)
    train(model, get_task(task).training_batches(model, step.batch_size, train_config.seed), train_config,
          callbacks=[QATSchedule(config)])
    convert(model)


_APPLY = {"prune": _prune, "factorize": _factorize, "quantize": _quantize,
          "quantize_activations": _quantize_activations}


def _distill(teacher: nn.Module, step: Step, task: str) -> nn.Module:
    from slimkit.distillation import distill
    from slimkit.models.tasks import get_task
    from slimkit.training import TrainConfig

    train_config = step.train or TrainConfig()
    student = student_model(teacher, step.student, train_config.seed)
    distill(teacher, student, get_task(task).training_batches(student, step.batch_size, train_config.seed),
            step.config, train_config)
    return student


_WIDTHS = ("widths", "hidden", "n_embd")  # the width fields of the reference architectures' configs


def student_model(teacher: nn.Module, student: str | float, seed: int = 0) -> nn.Module:
    """A fresh student: from a models spec ("mlp:hidden=64-32"), or the teacher's architecture with every
    width scaled by ``student`` (GPT: n_embd rounded to whole heads).

    >>> student_model(reference("cnn"), 0.5).config.widths  # doctest: +SKIP
    (16, 32)
    """
    import torch

    from slimkit.models.spec import from_spec

    if isinstance(student, str):
        return from_spec(student, seed=seed)
    config = getattr(teacher, "config", None)
    if not dataclasses.is_dataclass(config) or not any(hasattr(config, f) for f in _WIDTHS):
        raise UserInputError(f"cannot scale the widths of a {type(teacher).__name__}; give the student as a spec "
                             "like 'cnn:widths=16-32'")
    changes = {}
    for name in _WIDTHS:
        value = getattr(config, name, None)
        if isinstance(value, tuple):
            changes[name] = tuple(max(1, round(v * student)) for v in value)
        elif isinstance(value, int):
            heads = getattr(config, "n_head", 1)
            changes[name] = max(heads, round(value * student / heads) * heads)
    torch.manual_seed(seed)
    return type(teacher)(dataclasses.replace(config, **changes))
