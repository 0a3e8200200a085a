"""A smaller student built from a Hugging Face teacher's own config and initialised from its weights.

``smaller_student(teacher, depth=0.5, mlp=0.75)``: every decoder layer kept is one of the teacher's, evenly
spaced (the first and the last always among them), and each kept MLP has the teacher's channels with the
largest weight norms (gate and up rows, down columns). Distillation then starts from a model that already
computes something close to the teacher, as DistilBERT's every-other-layer initialisation does. The CLI
spelling is ``slimkit distill --teacher smollm2 --student teacher:depth=0.5,mlp=0.75``.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from slimkit.errors import UserInputError

_MLP = ("gate_proj", "up_proj", "down_proj")  # Llama-family MLP: rows of gate/up, columns of down are channels


def smaller_student(teacher: nn.Module, *, depth: float = 1.0, mlp: float = 1.0) -> nn.Module:
    """A new model of the teacher's class with ``depth`` of its decoder layers and ``mlp`` of its MLP width."""
    config = getattr(teacher, "config", None)
    layers = getattr(getattr(teacher, "model", None), "layers", None)
    if not (hasattr(config, "num_hidden_layers") and hasattr(config, "intermediate_size")
            and isinstance(layers, nn.ModuleList)):
        raise UserInputError(f"a {type(teacher).__name__} is not a Hugging Face decoder with model.layers and an "
                             "intermediate_size; give the student as a spec (e.g. 'gpt:n_layer=2') or a model folder")
    for name, value in (("depth", depth), ("mlp", mlp)):
        if not 0 < value <= 1:
            raise UserInputError(f"student {name}={value}: a fraction of the teacher's, in (0, 1]")
    n = config.num_hidden_layers
    kept = sorted(set(torch.linspace(0, n - 1, max(1, round(n * depth))).round().long().tolist()))
    width = max(1, round(config.intermediate_size * mlp))
    if width < config.intermediate_size and not all(hasattr(layers[0].mlp, p) for p in _MLP):
        raise UserInputError(f"a narrower MLP needs gate_proj/up_proj/down_proj layers; {type(teacher).__name__}'s "
                             "MLP has others: use mlp=1 (fewer layers only)")
    student_config = copy.deepcopy(config)
    student_config.num_hidden_layers, student_config.intermediate_size = len(kept), width
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds follow their layers
        student_config.layer_types = [config.layer_types[i] for i in kept]
    student = type(teacher)(student_config)
    state = {}
    for key in student.state_dict():
        match = re.match(r"(model\.layers\.)(\d+)\.(.*)", key)
        state[key] = teacher.state_dict()[key if match is None else
                                          f"{match[1]}{kept[int(match[2])]}.{match[3]}"].detach().clone()
    if width < config.intermediate_size:
        for i, source in enumerate(kept):
            channels = _strongest_channels(layers[source].mlp, width)
            for name in _MLP:
                key = f"model.layers.{i}.mlp.{name}.weight"
                state[key] = state[key][:, channels] if name == "down_proj" else state[key][channels]
    student.load_state_dict(state)
    return student.to(next(teacher.parameters()).dtype).train(teacher.training)


def _strongest_channels(mlp: nn.Module, count: int) -> torch.Tensor:
    gate, up, down = (getattr(mlp, name).weight.detach().float() for name in _MLP)
    score = gate.abs().sum(1) + up.abs().sum(1) + down.abs().sum(0)
    return score.argsort(descending=True)[:count].sort().values


def student_from_spec(teacher: nn.Module, spec: str) -> nn.Module:
    """``"teacher:depth=0.5,mlp=0.75"`` (either key may be left out) -> ``smaller_student``."""
    options = {}
    for item in filter(None, spec.removeprefix("teacher:").split(",")):
        key, _, value = item.partition("=")
        if key not in ("depth", "mlp"):
            raise UserInputError(f"student spec {spec!r}: unknown key {key!r}; use teacher:depth=D,mlp=M")
        try:
            options[key] = float(value)
        except ValueError:
            raise UserInputError(f"student spec {spec!r}: {key}={value!r} is not a number") from None
    return smaller_student(teacher, **options)
