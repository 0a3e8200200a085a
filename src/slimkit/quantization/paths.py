"""Never slower by surprise: measure each quantized layer's execution paths and keep the fastest.

For every QuantLinear and each probe size (rows of input), the float layer and every available
path are timed on the same random input, interleaved over a few rounds (median of medians); the
fastest path wins that size's range, and the largest probe's winner covers every larger input. The choice and
each path's speed relative to the float layer go into the manifest, so the report can show per
layer whether quantization made it faster or slower.

Never wrong by surprise either: before a path is timed, its output on the probe input is compared
with the dequantized weight's product computed in float64; a path off by more than ``AGREEMENT``
(relative to the largest output) is never chosen, and the manifest entry names it with its error.
"""

from __future__ import annotations

import statistics
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization.modules import QuantLinear
from slimkit.timing import latency_ms

PROBE_ROWS = (1, 16, 256)
TECHNIQUE = "path choice"  # manifest label of the entries choose_paths adds
AGREEMENT = 3e-2  # bf16 activations and outputs give up to about 5e-3 of the largest output; a bug gives far more


@torch.no_grad()
def choose_paths(model: nn.Module, *, probe_rows: tuple[int, ...] = PROBE_ROWS, allow_cache: bool = True,
                 threads: int = 2, runs: int = 5, rounds: int = 3, dtype: torch.dtype | None = None) -> list[dict]:
    """Pick each QuantLinear's path per batch-row range; returns (and records) one entry per layer.

    Layers are measured where they are (CPU or CUDA), with inputs of ``dtype``: by default float32
    on CPU and bfloat16 on CUDA. ``allow_cache=False`` keeps float copies out (memory stays at the
    codes' size).
    """
    entries = []
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    for name, layer in progress(layers, desc="measuring paths", unit="layer"):
        candidates = [p for p in layer.available_paths() if allow_cache or p != "cached"]
        device = layer.w_codes.device
        x_dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        exact = layer.dequantized_weight()
        weight = exact.to(x_dtype)
        inputs = {rows: torch.randn(rows, layer.in_features, device=device, dtype=x_dtype) for rows in probe_rows}
        rejected = _disagreeing(layer, exact, candidates, inputs.values())  # wrong at any size: never used
        agreeing = [p for p in candidates if p not in rejected]
        choice, speedups = [], {}
        for rows, x in inputs.items():
            timed = _interleaved_ms(layer, agreeing, x, weight, rounds=rounds, runs=runs, threads=threads)
            float_ms = timed.pop("float")
            best = min(timed, key=timed.get)
            choice.append((rows, best))
            speedups[str(rows)] = {p: round(float_ms / ms, 3) for p, ms in timed.items()}
        layer.set_paths(_merge(choice))
        entry = {"layer": name, "technique": TECHNIQUE, "paths": [list(p) for p in layer.paths],
                 "speedup_vs_float": speedups}
        if rejected:
            entry["rejected_paths"] = {p: f"output off by {error:.1e} of the largest value"
                                       for p, error in rejected.items()}
            warnings.warn(f"{name}: path(s) {', '.join(rejected)} gave wrong outputs and were not chosen "
                          f"({entry['rejected_paths']})", stacklevel=2)
        add_entry(model, entry)
        entries.append(entry)
    return entries


def _disagreeing(layer: QuantLinear, weight: torch.Tensor, paths: list[str], inputs) -> dict[str, float]:
    """The paths whose output on any of ``inputs`` is off the float64 product with the dequantized
    ``weight`` by more than AGREEMENT: path -> its largest error, relative to the largest output."""
    weight = weight.double()
    bias = None if layer.bias is None else layer.bias.double()
    references = [(x, F.linear(x.double(), weight, bias)) for x in inputs]
    errors = {}
    for path in paths:
        if path in ("dequant", "cached"):  # they compute with the reference's own weight
            continue
        layer.set_path(path)  # builds the path's kernel layout: once per path
        for x, reference in references:
            error = ((layer(x).double() - reference).abs().max() / reference.abs().max().clamp(min=1e-30)).item()
            if not error <= AGREEMENT:  # NaN counts as off
                errors[path] = max(error, errors.get(path, 0.0))
    return errors


def _interleaved_ms(layer: QuantLinear, paths: list[str], x, weight, *, rounds: int, runs: int,
                    threads: int) -> dict[str, float]:
    """Median over ``rounds`` of each candidate's median time, candidates interleaved in every round,
    so that a burst of load on a shared machine cannot decide the choice on its own."""
    reference = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)  # the float layer
    reference.weight.data = weight
    reference.bias = None if layer.bias is None else nn.Parameter(layer.bias.to(weight.dtype), requires_grad=False)
    times: dict[str, list[float]] = {"float": [], **{p: [] for p in paths}}
    for _ in range(rounds):
        times["float"].append(latency_ms(lambda: reference(x), runs=runs, threads=threads))
        for path in paths:
            layer.set_path(path)
            times[path].append(latency_ms(lambda: layer(x), runs=runs, threads=threads))
    return {name: statistics.median(values) for name, values in times.items()}


def _merge(choice: list[tuple[int, str]]) -> list[tuple[int | None, str]]:
    """[(1, a), (16, a), (128, b), (1024, b)] -> [(16, a), (None, b)]: ranges up to each probe."""
    merged: list[tuple[int | None, str]] = []
    for rows, path in choice:
        if merged and merged[-1][1] == path:
            merged[-1] = (rows, path)
        else:
            merged.append((rows, path))
    merged[-1] = (None, merged[-1][1])
    return merged
