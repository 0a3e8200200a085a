"""Sensitivity analysis: quality when one layer at a time is pruned to each sparsity, the rest left dense.

>>> result = sensitivity(cnn, get_task("digits"), levels=(0.5, 0.9))  # doctest: +SKIP
>>> print(result.table()); result.plot("sensitivity.png")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.progress import progress
from slimkit.pruning.importance import weight_scores
from slimkit.pruning.masks import layer_mask, select_layers


@dataclass
class SensitivityResult:
    metric: str
    baseline: float
    levels: tuple[float, ...]
    curves: dict[str, list[float]]  # layer -> quality at each level

    def table(self) -> str:
        """Markdown: one row per layer, one column per sparsity."""
        head = " | ".join(f"{s:.0%}" for s in self.levels)
        rows = [f"| layer | {head} |", "| --- | " + " | ".join("---:" for _ in self.levels) + " |"]
        rows += [f"| {name} | " + " | ".join(f"{q:.4f}" for q in values) + " |" for name, values in self.curves.items()]
        return f"{self.metric} (dense {self.baseline:.4f}) with one layer pruned:\n\n" + "\n".join(rows)

    def plot(self, path: str | Path) -> Path:
        """A PNG of quality against sparsity, one line per layer, the dense quality dashed."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, values in self.curves.items():
            ax.plot(self.levels, values, marker="o", label=name)
        ax.axhline(self.baseline, linestyle="--", color="gray", label="dense")
        ax.set(xlabel="sparsity of the layer", ylabel=self.metric, title="per-layer pruning sensitivity")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "baseline": self.baseline, "levels": list(self.levels), "curves": self.curves}


@torch.no_grad()
def sensitivity(model: nn.Module, quality, *, levels=(0.25, 0.5, 0.75, 0.9), method: str = "magnitude",
                include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> SensitivityResult:
    """Sweep each selected layer over ``levels`` (magnitude or random importance); the model is left unchanged.

    ``quality``: a function model -> float, or a task object (its primary metric; the zoo's tasks are in
    ``slimkit.models.tasks``).
    """
    if method not in ("magnitude", "l2", "random"):
        raise UserInputError(f"method={method!r}: the sweep needs no data, choose magnitude, l2 or random")
    if any(not 0 <= s < 1 for s in levels):
        raise UserInputError(f"levels={levels!r}: every sparsity must lie in [0, 1)")
    metric = getattr(quality, "metric", "quality")
    if hasattr(quality, "quality"):
        task = quality
        quality = lambda m: task.quality(m)[task.metric]  # noqa: E731 - one short closure
    model.eval()
    layers, _ = select_layers(model, include, exclude)
    baseline = float(quality(model))
    curves = {}
    for name, layer in progress(layers, desc="sensitivity", unit="layer"):
        original = layer.weight.detach().clone()
        scores = weight_scores(method, layer, generator=torch.Generator().manual_seed(0))
        curves[name] = []
        for level in levels:
            layer.weight.masked_fill_(~layer_mask(scores, level), 0)
            curves[name].append(float(quality(model)))
            layer.weight.copy_(original)
    return SensitivityResult(metric, baseline, tuple(levels), curves)
