"""Never slower by surprise: measure each quantized layer's execution paths and keep the fastest.

For every QuantLinear and each probe size (rows of input), the float layer and every available
path are timed on the same random input; the fastest path wins that size's range. The choice and
each path's speed relative to the float layer go into the manifest, so the report can show per
layer whether quantization made it faster or slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization.modules import QuantLinear
from slimkit.timing import latency_ms

PROBE_ROWS = (1, 16, 128, 1024)


@torch.no_grad()
def choose_paths(model: nn.Module, *, probe_rows: tuple[int, ...] = PROBE_ROWS, allow_cache: bool = True,
                 threads: int = 2, runs: int = 5) -> list[dict]:
    """Pick each QuantLinear's path per batch-row range; returns (and records) one entry per layer.

    ``allow_cache=False`` keeps float copies out (memory stays at the codes' size).
    """
    entries = []
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    for name, layer in progress(layers, desc="measuring paths", unit="layer"):
        candidates = [p for p in layer.available_paths() if allow_cache or p != "cached"]
        weight = layer.dequantized_weight()
        choice, speedups = [], {}
        for rows in probe_rows:
            x = torch.randn(rows, layer.in_features)
            float_ms = latency_ms(lambda: F.linear(x, weight, layer.bias), runs=runs, threads=threads)
            timed = {}
            for path in candidates:
                layer.set_path(path)
                timed[path] = latency_ms(lambda: layer(x), runs=runs, threads=threads)
            best = min(timed, key=timed.get)
            choice.append((rows, best))
            speedups[str(rows)] = {p: round(float_ms / ms, 3) for p, ms in timed.items()}
        layer.set_paths(_merge(choice))
        entry = {"layer": name, "technique": "path choice", "paths": [list(p) for p in layer.paths],
                 "speedup_vs_float": speedups}
        add_entry(model, entry)
        entries.append(entry)
    return entries


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
