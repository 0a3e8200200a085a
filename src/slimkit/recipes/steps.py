"""Apply one recipe step to a model with the technique's own function (nothing re-implemented here).

>>> model = apply_step(model, step, task="digits", calib="digits")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

from torch import nn

from slimkit.errors import UserInputError
from slimkit.recipes.recipe import Step
from slimkit.training import TrainConfig


def apply_step(model: nn.Module, step: Step, task: str | None, calib: str | None, *,
               measure_paths: bool = True) -> nn.Module:
    """``model`` after ``step`` (the same object, or the student of a distill step), applied by the registry.

    ``task``: training data of finetune/distill/QAT steps; ``calib``: calibration data of quantization
    and data-driven pruning (None for steps that need no data, such as magnitude pruning or
    factorization). ``measure_paths``: after weight quantization, time each layer's execution
    paths and keep the fastest (the search leaves it out: it changes speed, not quality or bytes).
    """
    from slimkit import registry
    from slimkit.models.tasks import get_task

    seed = (step.train or TrainConfig()).seed
    student = None if step.student is None else lambda teacher: student_model(teacher, step.student, seed)
    inputs = registry.Inputs(data=get_task(task) if task else None, calib=get_task(calib) if calib else None,
                             train=step.train, batch_size=step.batch_size, student=student, paths=None)
    configs = step.configs()
    for index, config in enumerate(configs):
        last = index == len(configs) - 1  # paths are timed once, after the step's last override
        paths = {} if last and measure_paths else None
        model = registry.apply(model, step.technique, config, dataclasses.replace(inputs, paths=paths)).model
    return model


_WIDTHS = ("widths", "hidden", "n_embd")  # the width fields of the reference architectures' configs


def student_model(teacher: nn.Module, student: str | float, seed: int = 0) -> nn.Module:
    """A fresh student: from a models spec ("mlp:hidden=64-32"), from the teacher's own Hugging Face config with
    fewer layers and a narrower MLP initialised from its weights ("teacher:depth=0.5,mlp=0.75"), or the
    teacher's architecture with every width scaled by ``student`` (GPT: n_embd rounded to whole heads).

    >>> student_model(reference("cnn"), 0.5).config.widths  # doctest: +SKIP
    (16, 32)
    """
    import torch

    from slimkit.models.spec import from_spec

    if isinstance(student, str) and student.startswith("teacher:"):  # the teacher's own config, fewer layers
        from slimkit.distillation.student import student_from_spec

        torch.manual_seed(seed)
        return student_from_spec(teacher, student)
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
