"""Never slower by surprise, never bigger by surprise: measure each quantized layer's execution paths
and keep the fastest that fits in memory.

For every QuantLinear and each probe size (rows of input), the float layer and every available
path are timed on the same random input, interleaved over a few rounds (median of medians); the
fastest allowed path wins that size's range, and the largest probe's winner covers every larger input.
Layers of the same kind, tensor shapes and dtypes run the same kernels: they are timed once (the
first of them, named in the others' entries as ``timed_as``), so a 30-block decoder costs 7 timings.

Memory: by default a layer keeps one copy of its weight, the stored codes or a kernel's layout of
them (``ONE_COPY`` paths; a CPU kernel's layout replaces the codes, see modules.py), so resident
memory stays at the stored size. Paths that hold more (a float32 or bf16 copy) are taken only within
a ``memory_budget``: layers are upgraded to their fastest choice where it saves the most float-time
per extra byte, while the quantized layers' resident total fits.

Never wrong by surprise either: before a path is timed, its output on the probe input is compared
with the dequantized weight's product computed in float64; a path off by more than ``AGREEMENT``
(relative to the largest output) is never chosen, and the manifest entry names it with its error. A
path that fails to run, or that the CPU cannot run natively, is skipped with its reason.

Each layer's manifest entry holds its choice, every path's speed relative to the float layer, every
path's resident bytes beside the stored and float sizes, and the machine it was measured on
(``cpu.signature``: CPU model and flags); a choice loaded on another kind of CPU is set aside.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import UserInputError
from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization import cpu, kernels
from slimkit.quantization.activation.modules import INT8_PATHS, Int8Linear, x86_missing
from slimkit.quantization.modules import QuantLinear
from slimkit.timing import latency_ms

PROBE_ROWS = (1, 16, 256)
TECHNIQUE = "path choice"  # manifest label of the entries choose_paths adds
AGREEMENT = 3e-2  # bf16 activations and outputs give up to about 5e-3 of the largest output; a bug gives far more
# paths holding the codes or one kernel layout of them, nothing more (Int8Linear's int8 weights: the codes
# and one int8 layout, whichever kernel)
ONE_COPY = ("dequant", *kernels.KERNELS, *INT8_PATHS)
Layer = QuantLinear | Int8Linear


@dataclass
class _Measured:
    name: str
    layer: Layer
    ms: dict[int, dict[str, float]]  # rows -> path (and "float") -> median ms
    resident: dict[str, int]  # path -> the layer's resident bytes when it alone is used
    rejected: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    chosen: list = field(default_factory=list)
    timed_as: str = ""  # the layer of the same shape and encoding whose timings this one reuses (itself if timed)

    def choice(self, allowed) -> list[tuple[int | None, str]]:
        return _merge([(rows, min((p for p in times if p in allowed), key=times.get))
                       for rows, times in self.ms.items()])

    def one_copy_choice(self) -> list[tuple[int | None, str]]:
        """The fastest choice among ONE_COPY paths that holds no more than one of them alone: two int8
        kernels mixed by row count would hold two layouts, so then the single path fastest overall."""
        merged = self.choice(ONE_COPY)
        if len({path for _, path in merged}) == 1 or self.resident_of(merged) <= max(self.resident.values()):
            return merged
        single = [p for p in self.resident if p in ONE_COPY]
        return [(None, min(single, key=lambda p: sum(t[p] / t["float"] for t in self.ms.values())))]

    def resident_of(self, choice) -> int:
        self.layer.set_paths(choice)
        return self.layer.resident_bytes()


@torch.no_grad()
def choose_paths(model: nn.Module, *, probe_rows: tuple[int, ...] = PROBE_ROWS,
                 memory_budget: int | float | None = None, threads: int = 2, runs: int = 5, rounds: int = 3,
                 dtype: torch.dtype | None = None) -> list[dict]:
    """Pick each QuantLinear's and dynamic Int8Linear's path per batch-row range; returns (and records)
    one entry per layer.

    Layers are measured where they are (CPU or CUDA), with inputs of ``dtype``: by default float32
    on CPU and bfloat16 on CUDA. ``memory_budget``: None keeps one copy of each weight (resident
    memory at the stored size); bytes (int) or a fraction of the quantized layers' float32 size
    (float, e.g. 0.5) admits faster paths that hold a float or bf16 copy while the total fits.
    """
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, QuantLinear) or (isinstance(m, Int8Linear) and m.mode == "dynamic")]
    budget = _budget_bytes(memory_budget, [m for _, m in layers])
    timed: dict = {}  # layers of one shape and encoding are timed once (a decoder repeats each layer per block)
    measured = [_measure(name, layer, probe_rows, dtype, timed, threads=threads, runs=runs, rounds=rounds)
                for name, layer in progress(layers, desc="measuring paths", unit="layer")]
    _fit(measured, budget)
    entries = []
    for m in measured:
        m.layer.set_paths(m.chosen)
        m.layer.measured_on = cpu.signature(m.layer.weight_device())
        entry = _entry(m)
        add_entry(model, entry)
        entries.append(entry)
    return entries


def _budget_bytes(memory_budget: int | float | None, layers: list[Layer]) -> int | None:
    if memory_budget is None:
        return None
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float)) or memory_budget <= 0:
        raise UserInputError(f"memory_budget must be a positive number of bytes (int) or a fraction of the "
                             f"float32 size (float), got {memory_budget!r}")
    if isinstance(memory_budget, float):
        return int(memory_budget * sum(_float_bytes(layer) for layer in layers))
    return memory_budget


def _float_bytes(layer: Layer) -> int:
    return 4 * (layer.in_features * layer.out_features + (layer.out_features if layer.bias is not None else 0))


def _measure(name: str, layer: Layer, probe_rows, dtype, timed: dict, **timing) -> _Measured:
    device = layer.weight_device()
    x_dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    int8 = isinstance(layer, Int8Linear)
    exact = layer.effective_weight() if int8 else layer.dequantized_weight()
    weight = exact.to(x_dtype)
    inputs = {rows: torch.randn(rows, layer.in_features, device=device, dtype=x_dtype) for rows in probe_rows}
    missing = (x86_missing() if int8 else cpu.missing_bf16()) if device.type == "cpu" else None
    skipped = {("x86" if int8 else "bf16"): missing} if missing else {}
    candidates = layer.available_paths()
    rejected, failed = _disagreeing(layer, exact, candidates, inputs.values())  # wrong at any size: never used
    skipped.update(failed)
    agreeing = [p for p in candidates if p not in rejected and p not in failed]
    # the same kind of layer, tensors of the same shapes and dtypes, the same agreeing paths: the same kernels
    key = (type(layer).__name__, str(device), x_dtype, tuple(probe_rows), tuple(agreeing),
           tuple((k, tuple(v.shape), v.dtype) for k, v in layer.state_dict().items() if v is not None))
    if key not in timed:
        timed[key] = name, {rows: _interleaved_ms(layer, agreeing, x, weight, **timing) for rows, x in inputs.items()}
    timed_as, ms = timed[key]
    resident = {}
    for path in agreeing:
        layer.set_path(path)
        resident[path] = layer.resident_bytes()
    return _Measured(name, layer, ms, resident, rejected, skipped, timed_as=timed_as)


def _fit(measured: list[_Measured], budget: int | None) -> None:
    """Every layer's choice among its one-copy paths; then, within ``budget``, the upgrades to the fastest
    choice that save the most float-time (summed over the probe sizes) per extra byte."""
    for m in measured:
        m.chosen = m.one_copy_choice()
    if budget is None:
        return
    used = sum(m.resident_of(m.chosen) for m in measured)
    if used > budget:
        warnings.warn(f"memory budget {budget} bytes is below the {used} bytes the quantized layers take with "
                      "one copy of each weight; each keeps one copy", stacklevel=3)
    upgrades = []
    for m in measured:
        fast = m.choice(m.resident)
        if fast != m.chosen:
            extra = m.resident_of(fast) - m.resident_of(m.chosen)
            gain = sum((t[_path_at(m.chosen, rows)] - t[_path_at(fast, rows)]) / t["float"] for rows, t in m.ms.items())
            upgrades.append((gain / max(extra, 1), extra, m, fast))
    for _, extra, m, fast in sorted(upgrades, key=lambda u: u[0], reverse=True):
        if used + extra <= budget:
            m.chosen, used = fast, used + extra


def _entry(m: _Measured) -> dict:
    layer = m.layer
    entry = {"layer": m.name, "technique": TECHNIQUE, "paths": [list(p) for p in layer.paths],
             "speedup_vs_float": {str(rows): {p: round(t["float"] / ms, 3) for p, ms in t.items() if p != "float"}
                                  for rows, t in m.ms.items()},
             "resident_bytes": layer.resident_bytes(), "resident_bytes_by_path": m.resident,
             "stored_bytes": sum(t.nbytes for t in layer.state_dict().values()), "float_bytes": _float_bytes(layer),
             "measured_on": layer.measured_on}
    if m.timed_as != m.name:
        entry["timed_as"] = m.timed_as  # same shapes and encoding: timed once
    slower = [rows for rows, t in m.ms.items() if t[_path_at(layer.paths, rows)] > t["float"]]
    if slower:
        entry["slower_than_float_at_rows"] = slower  # the memory rule kept the float copy out
    if m.rejected:
        entry["rejected_paths"] = {p: f"output off by {error:.1e} of the largest value" for p, error in m.rejected.items()}
        warnings.warn(f"{m.name}: path(s) {', '.join(m.rejected)} gave wrong outputs and were not chosen "
                      f"({entry['rejected_paths']})", stacklevel=3)
    if m.skipped:
        entry["skipped_paths"] = m.skipped
    return entry


def _path_at(paths, rows: int) -> str:
    return next(path for limit, path in paths if limit is None or rows <= limit)


def _disagreeing(layer: Layer, weight: torch.Tensor, paths: list[str], inputs) -> tuple[dict, dict]:
    """({path: its largest error relative to the largest output} for the paths whose output on any of
    ``inputs`` is off the float64 product with the dequantized ``weight`` by more than AGREEMENT,
    {path: why} for the paths that failed to run)."""
    weight = weight.double()
    bias = None if layer.bias is None else layer.bias.double()
    references = [(x, F.linear(x.double(), weight, bias)) for x in inputs]
    errors, failed = {}, {}
    for path in paths:
        if path in ("dequant", "cached"):  # they compute with the reference's own weight
            continue
        try:
            layer.set_path(path)  # builds the path's kernel layout: once per path
            outputs = [layer(x).double() for x, _ in references]
        except Exception as exc:  # a kernel this build or CPU cannot run: skipped, never a crash
            failed[path] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        for y, (_, reference) in zip(outputs, references):
            error = ((y - reference).abs().max() / reference.abs().max().clamp(min=1e-30)).item()
            if not error <= AGREEMENT:  # NaN counts as off
                errors[path] = max(error, errors.get(path, 0.0))
    return errors, failed


def _interleaved_ms(layer: Layer, paths: list[str], x, weight, *, rounds: int, runs: int,
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
