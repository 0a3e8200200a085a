"""Honest measurement: quality, parameters, nonzeros, artifact bytes, latency and peak memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from slimkit.evaluation.bench import layer_speedups, peak_memory_bytes
from slimkit.timing import MIN_PAIRS, latency_ms, paired_speedup
from slimkit.errors import UserInputError
from slimkit.evaluation.protocol import Task
from slimkit.evaluation.record import EvalRecord

__all__ = ["EvalRecord", "Task", "evaluate"]


def evaluate(
    model: nn.Module,
    task: Task,
    *,
    name: str | None = None,
    technique: str = "baseline",
    baseline: str | None = None,
    artifact_dir: str | Path | None = None,
    batch_size: int | None = None,
    threads: int = 2,
    runs: int = 7,
    baseline_model: nn.Module | None = None,
) -> EvalRecord:
    """Measure ``model`` on the task object ``task`` (``slimkit.evaluate`` also takes the zoo's task names).

    The artifact size is that of ``artifact_dir`` when given (a folder ``slimkit.save``
    wrote), otherwise the model is saved to a temporary folder and that is measured. With
    ``baseline_model``, the speedup is timed in alternating pairs against it (``slimkit.timing.
    paired_speedup``, at least ``runs`` pairs) and kept with its spread in ``record.speedup``, and so
    is each quantized layer's speed against its float layer.

    >>> rec = evaluate(reference("cnn"), get_task("digits"))  # doctest: +SKIP
    >>> rec.value, rec.artifact_bytes, rec.latency_ms  # doctest: +SKIP
    (0.996..., 697100, 0.9...)
    """
    from slimkit.io import artifact_bytes, save

    if task is None or isinstance(task, str):
        raise UserInputError(f"evaluate needs a task object, not {task!r}; slimkit.evaluate looks the zoo's "
                             f"tasks up by name (slimkit.models.tasks.get_task)")
    model.eval()
    batch = batch_size or task.default_batch
    if batch < 1:
        raise ValueError(f"batch_size={batch}: must be at least 1")
    _check_finite(model)
    with torch.no_grad():
        try:
            quality = task.quality(model)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # e.g. token ids fed to the digits MLP
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserInputError(f"a {type(model).__name__} cannot run the {task.name!r} task ({first}); "
                                 "evaluate it on the task it was made for") from exc
    call = task.example_call(model, batch)
    if artifact_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            size = artifact_bytes(save(model, tmp))
    else:
        size = artifact_bytes(artifact_dir)
    params, nonzero = parameter_counts(model)
    speedup, latency = None, None
    if baseline_model is not None:
        baseline_model.eval()
        speedup = paired_speedup(call, task.example_call(baseline_model, batch), pairs=max(runs, MIN_PAIRS),
                                 threads=threads)
        latency, runs = speedup["latency_ms"], speedup["pairs"]
    return EvalRecord(
        name=name or type(model).__name__, task=task.name, technique=technique,
        metric=task.metric, value=quality[task.metric],
        higher_is_better=task.higher_is_better, quality=quality,
        params=params, nonzero=nonzero, artifact_bytes=size,
        latency_ms=latency if latency is not None else latency_ms(call, runs=runs, threads=threads),
        latency_batch=batch, latency_runs=runs, threads=threads, peak_memory_bytes=peak_memory_bytes(model, call),
        baseline=baseline, notes=_layer_notes(model, threads, paired=baseline_model is not None), speedup=speedup,
    )


def _check_finite(model: nn.Module) -> None:
    """Refuse NaN/Inf weights, naming the tensor: every figure measured from them would be meaningless.
    Parameters only: a buffer may hold -inf on purpose (an additive attention mask)."""
    for name, tensor in model.named_parameters():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise UserInputError(f"{name!r} holds {count} NaN/Inf value(s); the model cannot be measured: "
                                 "repair or retrain it (its quality would be NaN, its speed meaningless)")


def _layer_notes(model: nn.Module, threads: int, paired: bool) -> dict:
    """Per-layer execution-path choices recorded in the manifest, for the report's per-layer table; when
    ``paired``, each layer's speed against its float layer timed again now, in pairs, with its spread
    (once per group of layers the path choice timed as one, e.g. a decoder's repeated blocks:
    ``paired_as`` names the layer timed)."""
    from slimkit.manifest import get_manifest
    from slimkit.quantization.paths import TECHNIQUE as PATH_CHOICE

    entries = [e for e in get_manifest(model) if e.get("technique") == PATH_CHOICE]
    layers = [{"layer": e["layer"], "paths": e["paths"], "speedup_vs_float": e["speedup_vs_float"]} for e in entries]
    if paired:
        timed: dict = {}  # layers the path choice timed as one (same shapes and encoding), on the same paths
        for layer, entry in zip(layers, entries):
            key = (entry.get("timed_as", entry["layer"]), str(entry["paths"]))
            if key in timed:
                layer["paired_vs_float"], layer["paired_as"] = timed[key]
                continue
            rows = [int(n) for n in layer["speedup_vs_float"]]
            layer["paired_vs_float"] = layer_speedups(model.get_submodule(layer["layer"]), rows, threads)
            timed[key] = layer["paired_vs_float"], layer["layer"]
    return {"layers": layers} if layers else {}


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """Logical parameters and nonzeros, counting weights stored encoded (e.g. QuantLinear codes).

    A module a transform swapped in reports its encoded weights through ``encoded_weight_counts()``.
    """
    params = nonzero = 0
    for p in model.parameters():  # tied weights are yielded once
        params, nonzero = params + p.numel(), nonzero + int(p.count_nonzero())
    for module in model.modules():
        if hasattr(module, "encoded_weight_counts"):
            extra_params, extra_nonzero = module.encoded_weight_counts()
            params, nonzero = params + extra_params, nonzero + extra_nonzero
    return params, nonzero

