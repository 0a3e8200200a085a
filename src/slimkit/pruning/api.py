"""``slimkit.prune``: structured, N:M and unstructured pruning of a model, in place, with a report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from slimkit.errors import UserInputError
from slimkit.losses import cross_entropy_loss
from slimkit.manifest import add_entry
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.importance import model_inputs
from slimkit.pruning.structured import prune_structure
from slimkit.pruning.unstructured import LayerReport, prune_weights
from slimkit.selection import check_finite_weight

TECHNIQUE = "pruning"


@dataclass
class PruneReport:
    """Every layer / channel group / attention unit pruned or skipped (with the reason)."""

    layers: list[LayerReport]
    notes: list[str]

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' weights that are zero (unstructured part)."""
        rows = [r for r in self.layers if r.unit == "weights" and r.skipped is None]
        before = sum(r.before for r in rows)
        return 1 - sum(r.after for r in rows) / before if before else 0.0

    @property
    def clamped(self) -> list[str]:
        return [r.layer for r in self.layers if r.note]

    def to_dict(self) -> dict:
        return {"sparsity": self.sparsity, "notes": self.notes,
                "layers": [dataclasses.asdict(r) | {"sparsity": r.sparsity} for r in self.layers]}

    def table(self) -> str:
        """A markdown table, one row per layer / group / unit."""
        rows = ["| layer | unit | before | after | removed | note |", "| --- | --- | ---: | ---: | ---: | --- |"]
        for r in self.layers:
            rows.append(f"| {r.layer} | {r.unit} | {r.before:,} | {r.after:,} | {r.sparsity:.1%} | "
                        f"{r.skipped or r.note or ''} |")
        return "\n".join(rows)


def prune(model: nn.Module, config: PruneConfig, data=None, *, example_inputs=None, loss_fn=cross_entropy_loss
          ) -> PruneReport:
    """Prune ``model`` in place as ``config`` says; return the report (also appended to the manifest).

    Structured pruning (``config.structured``) runs first and replaces layers by smaller ones; then
    N:M or unstructured masks are attached (they stay applied through training; see masks.py).
    ``data``: calibration batches (model inputs, or (inputs, targets) pairs: taylor needs targets);
    ``example_inputs``: a model input for tracing (default: the first batch of ``data``, else the
    model's ``example_input()`` where it has one, as the zoo's models do); ``loss_fn(model, batch) ->
    (summed loss, count)``: the loss taylor differentiates (``slimkit.train``'s signature).

    >>> report = prune(cnn, PruneConfig(sparsity=0.9, scope="global"))  # doctest: +SKIP
    >>> report = prune(cnn, PruneConfig(structured=True, ratio=0.5), data=batches)  # doctest: +SKIP
    """
    for name, layer in model.named_modules():  # a NaN would rank as an arbitrary weight and pass on silently
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            check_finite_weight(name, layer.weight)
    data = list(data) if data is not None else None
    reports, notes = [], []
    if config.structured:
        example = example_inputs if example_inputs is not None else _example(model, data)
        structured, notes = prune_structure(model, config, (example,), data, loss_fn)
        reports += structured
    if config.sparsity > 0 or config.layer_sparsity or config.nm:
        reports += prune_weights(model, config, data, loss_fn)
    for r in reports:
        entry = {"layer": r.layer, "technique": TECHNIQUE, "method": r.method, "unit": r.unit}
        if r.skipped:
            entry["skipped"] = r.skipped
        else:
            entry.update(sparsity=round(r.sparsity, 6), before=r.before, after=r.after)
            if config.nm:
                entry["pattern"] = f"{config.nm[0]}:{config.nm[1]}"
            if r.note:
                entry["note"] = r.note
        add_entry(model, entry)
    return PruneReport(reports, notes)


def _example(model: nn.Module, data):
    """The tracing input: the first calibration batch, else the model's own ``example_input()`` (the zoo's
    models have one)."""
    if data:
        return model_inputs(data[:1])[0]
    if callable(getattr(model, "example_input", None)):
        return model.example_input()
    raise UserInputError(f"structured pruning traces the model on an example input: pass example_inputs= "
                         f"or data= for a {type(model).__name__}")
