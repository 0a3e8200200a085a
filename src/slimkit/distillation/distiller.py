"""``slimkit.distill``: train a student to mimic a teacher, inside ``slimkit.train``.

The student, any feature projections and (in online mode) the teacher live in one ``Distillation``
module, which is what the training loop optimises; distillation only supplies the loss.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.distillation import losses
from slimkit.distillation.config import DistillConfig
from slimkit.distillation.hooks import FeatureCapture
from slimkit.errors import UserInputError
from slimkit.manifest import add_entry
from slimkit.training import TrainConfig, train
from slimkit.training.batches import as_batch_source


class Distillation(nn.Module):
    """Student + learned projections (+ the teacher, registered as a submodule only when it is trained)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, config: DistillConfig,
                 projections: dict[str, nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict(projections)
        self.config = config
        if config.mode == "online":
            self.teacher = teacher
        else:  # a tuple keeps it out of the submodules: not optimised, not checkpointed, never in train mode
            self._frozen_teacher = (teacher.eval(),)
        # hooks are registered per step but the modules are looked up once (unknown names fail here)
        self._student_capture = FeatureCapture(student, [s for s, _ in config.features], "the student")
        self._teacher_capture = FeatureCapture(teacher, [t for _, t in config.features], "the teacher")
        self._cache: dict[bytes, tuple[Tensor, dict[str, Tensor]]] = {}

    def loss(self, batch) -> tuple[Tensor, int]:
        """The training loop's loss_fn: summed over positions, with the number of positions."""
        x, y = _split(batch)
        c = self.config
        with self._student_capture as capture:
            s_logits = _logits(_call(self.student, x))
        s_feats = capture.captured
        t_logits, t_feats = self._teacher_outputs(x)
        if s_logits.shape != t_logits.shape:
            raise UserInputError(f"teacher output {tuple(t_logits.shape)} and student output "
                                 f"{tuple(s_logits.shape)} differ; distillation needs the same output shape")
        s_logits, t_logits = _real_positions(s_logits, x), _real_positions(t_logits, x)
        count = s_logits.numel() // s_logits.shape[-1]
        total = _response(s_logits, t_logits.detach(), y, c)
        if c.mode == "online":  # mutual learning: the teacher learns from the student too
            total = total + _response(t_logits, s_logits.detach(), y, c)
        aux = self._feature_terms(s_feats, t_feats)
        if c.relation != "none" and not c.features:
            aux = aux + c.relation_weight * _relation(s_logits, t_logits.detach(), c.relation)
        return total + count * aux, count

    def _teacher_outputs(self, x) -> tuple[Tensor, dict[str, Tensor]]:
        if self.config.mode == "online":
            with self._teacher_capture as capture:
                return _logits(_call(self.teacher, x)), dict(capture.captured)
        key = _input_key(x) if self.config.cache_teacher else None
        if key in self._cache:
            return self._cache[key]
        with torch.no_grad(), self._teacher_capture as capture:
            out = (_logits(_call(self._frozen_teacher[0], x)), dict(capture.captured))
        if key is not None:
            self._cache[key] = out
        return out

    def _feature_terms(self, s_feats: dict[str, Tensor], t_feats: dict[str, Tensor]) -> Tensor:
        c, aux = self.config, torch.zeros(())
        for i, (s_name, t_name) in enumerate(c.features):
            s, t = s_feats[s_name], t_feats[t_name]
            if c.mode != "online":
                t = t.detach()
            if c.feature_weight:
                aux = aux + c.feature_weight * losses.feature_loss(_project(self.projections, i, s), t, c.feature_loss)
            if c.attention_weight:
                aux = aux + c.attention_weight * losses.attention_transfer(s, t)
            if c.relation != "none":
                aux = aux + c.relation_weight * _relation(s, t, c.relation)
        return aux


def distill(teacher: nn.Module | None, student: nn.Module, data, config: DistillConfig = DistillConfig(),
            train_config: TrainConfig = TrainConfig(), *, callbacks=()):
    """Train ``student`` in place to mimic ``teacher`` on batches (inputs, labels) from ``data``.

    Labels of -100 mark unlabelled positions: they get only the distillation loss. Returns the
    training loop's ``TrainResult``.

    >>> result = distill(teacher_gpt, student_gpt, batches, DistillConfig(temperature=2, alpha=0.9),
    ...                  TrainConfig(steps=500, lr=3e-3))  # doctest: +SKIP
    """
    source = as_batch_source(data)
    if config.mode == "self":
        if teacher is not None:
            raise UserInputError("mode='self' distils the student from its own moving average: pass teacher=None")
        teacher = copy.deepcopy(student).requires_grad_(False)
    elif teacher is None:
        raise UserInputError(f"mode={config.mode!r} needs a teacher model")
    elif config.mode == "offline":
        teacher.requires_grad_(False)
    module = Distillation(student, teacher, config, _projections(student, teacher, config, source))
    callbacks = list(callbacks) + ([_EMATeacher(student, teacher, config.ema_decay)] if config.mode == "self" else [])
    result = train(module, source, train_config, loss_fn=lambda m, batch: m.loss(batch), callbacks=callbacks)
    add_entry(student, {"layer": "(model)", "technique": "distillation", "mode": config.mode,
                        "temperature": config.temperature, "alpha": config.alpha,
                        "teacher_params": sum(p.numel() for p in teacher.parameters()),
                        "steps": result.steps, "features": [list(pair) for pair in config.features]})
    return result


def pseudo_label(teacher: nn.Module, x: Tensor, threshold: float = 0.0, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Label unlabelled inputs with the teacher's top class; keep those it is at least ``threshold`` sure of.

    >>> x_more, y_more = pseudo_label(teacher, unlabelled_x, threshold=0.9)  # doctest: +SKIP
    """
    if not 0 <= threshold < 1:
        raise UserInputError(f"threshold={threshold} must lie in [0, 1)")
    teacher.eval()
    with torch.no_grad():
        probs = torch.cat([F.softmax(_logits(teacher(xb)).float(), -1) for xb in x.split(batch_size)])
    confidence, labels = probs.max(-1)
    keep = confidence >= threshold
    return x[keep], labels[keep]


class _EMATeacher:
    def __init__(self, student: nn.Module, teacher: nn.Module, decay: float) -> None:
        self.pairs = list(zip(teacher.parameters(), student.parameters()))
        self.decay = decay

    def on_step_end(self, state) -> None:
        with torch.no_grad():
            for t, s in self.pairs:
                t.lerp_(s, 1 - self.decay)


def _projections(student, teacher, config: DistillConfig, source) -> dict[str, nn.Module]:
    """A Linear (or 1x1 conv) per feature pair whose widths differ, sized by one probe forward."""
    if not (config.features and config.feature_weight):
        return {}
    position = source.state_dict()
    x = _split(source.next())[0]
    source.load_state_dict(position)  # the probe must not move the data position
    s_names, t_names = [s for s, _ in config.features], [t for _, t in config.features]
    with torch.no_grad(), FeatureCapture(student, s_names, "the student") as sc, \
            FeatureCapture(teacher, t_names, "the teacher") as tc:
        _call(student, x), _call(teacher, x)
    projections = {}
    for i, (s_name, t_name) in enumerate(config.features):
        s, t = sc.captured[s_name], tc.captured[t_name]
        dim = 1 if s.dim() == 4 else -1
        others = [n for d, n in enumerate(s.shape) if d != dim % s.dim()]
        if s.dim() != t.dim() or others != [n for d, n in enumerate(t.shape) if d != dim % t.dim()]:
            raise UserInputError(f"student feature {s_name!r} {tuple(s.shape)} and teacher feature {t_name!r} "
                                 f"{tuple(t.shape)} differ in more than their width; pick layers of matching shape")
        if s.shape[dim] != t.shape[dim]:
            width_in, width_out = s.shape[dim], t.shape[dim]
            projections[str(i)] = (nn.Conv2d(width_in, width_out, 1, bias=False) if s.dim() == 4
                                   else nn.Linear(width_in, width_out, bias=False))
    return projections


def _project(projections: nn.ModuleDict, i: int, s: Tensor) -> Tensor:
    return projections[str(i)](s) if str(i) in projections else s


def _response(s_logits: Tensor, t_logits: Tensor, y: Tensor | None, c: DistillConfig) -> Tensor:
    if c.output_loss != "kd":  # outputs that are not logits (an encoder's hidden states): match them directly
        return losses.feature_loss(s_logits, t_logits, c.output_loss) * (s_logits.numel() // s_logits.shape[-1])
    total = c.alpha * losses.kd_loss(s_logits, t_logits, c.temperature)
    if c.alpha < 1 and y is not None:
        total = total + (1 - c.alpha) * F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]).float(),
                                                        y.reshape(-1), ignore_index=-100, reduction="sum")
    return total


def _relation(s: Tensor, t: Tensor, kind: str) -> Tensor:
    if kind == "sp":
        return losses.similarity_preserving(s, t)
    return losses.rkd_distance(s, t) + 2 * losses.rkd_angle(s, t)  # the paper's weights: distance 1, angle 2


def _logits(out) -> Tensor:
    """Logits when the model has them, else an encoder's last hidden states, else the output itself."""
    logits = getattr(out, "logits", None)
    return logits if logits is not None else getattr(out, "last_hidden_state", out)


def _split(batch) -> tuple:
    """(inputs, labels or None): a (x, y) pair, or a Hugging Face dict whose optional "labels" are the labels."""
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch.get("labels")
    return batch[0], batch[1]


def _call(model: nn.Module, x):
    return model(**x) if isinstance(x, Mapping) else model(x)


def _real_positions(output: Tensor, x) -> Tensor:
    """Per-token outputs (B, T, H) of a padded HF batch: only the positions its attention_mask marks as real."""
    mask = x.get("attention_mask") if isinstance(x, Mapping) else None
    if mask is None or output.dim() != 3 or output.shape[:2] != mask.shape:
        return output
    return output[mask.bool()]  # (real tokens, H)


def _input_key(x) -> bytes:
    tensors = [x[k] for k in sorted(x)] if isinstance(x, Mapping) else [x]
    digest = hashlib.sha1()
    for t in tensors:
        digest.update(t.detach().cpu().numpy().tobytes())
    return digest.digest()
