"""Unstructured and N:M pruning of Linear/Conv2d weights: scores, masks, and the per-layer report rows."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.losses import cross_entropy_loss
from slimkit.progress import progress
from slimkit.pruning import masks as M
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.importance import accumulated_grads, input_norms, model_inputs, weight_scores
from slimkit.pruning.sparsegpt import sparsegpt
from slimkit.calibration.layer_inputs import sequential_inputs


@dataclass
class LayerReport:
    """One layer's outcome. ``unit``: "weights", "channels" or "heads"; counts are of that unit."""

    layer: str
    unit: str
    before: int
    after: int
    method: str = ""
    skipped: str | None = None
    note: str | None = None

    @property
    def sparsity(self) -> float:
        return 1 - self.after / self.before if self.before else 0.0


def target_sparsity(name: str, config: PruneConfig) -> float:
    """The layer's target: the first matching ``layer_sparsity`` pattern, else ``sparsity``."""
    return next((s for pattern, s in config.layer_sparsity if fnmatchcase(name, pattern)), config.sparsity)


def prune_weights(model: nn.Module, config: PruneConfig, data: list | None, loss_fn=cross_entropy_loss
                  ) -> list[LayerReport]:
    """Mask the selected layers' weights as ``config`` says (in place, masks attached); one report per layer."""
    chosen, skipped = M.select_layers(model, config.include, config.exclude)
    for name, layer in chosen:
        if config.method in ("wanda", "sparsegpt") and not isinstance(layer, nn.Linear):
            skipped[name] = f"{config.method} prunes Linear layers only"
        elif config.nm and layer.weight[0].numel() % config.nm[1]:
            skipped[name] = f"input size {layer.weight[0].numel()} is not a multiple of M={config.nm[1]}"
    chosen = [(name, layer) for name, layer in chosen if name not in skipped]
    reports = [LayerReport(name, "weights", m.weight.numel(), m.weight.numel(), config.method, skipped=reason)
               for name, m in model.named_modules() if (reason := skipped.get(name))]
    if config.needs_calibration and not data:
        raise UserInputError(f"method={config.method!r} needs calibration data: pass data= (batches of model "
                             "inputs, or (inputs, targets) for taylor)")
    data = list(data or [])[:config.calibration_batches]
    keeps = _keep_masks(model, chosen, config, data, loss_fn)
    for name, layer in chosen:
        M.attach_mask(layer, keeps[name])
        reports.append(LayerReport(name, "weights", layer.weight.numel(), int(keeps[name].sum()), config.method))
    return reports


def _keep_masks(model: nn.Module, chosen: list, config: PruneConfig, data: list, loss_fn
                ) -> dict[str, torch.Tensor]:
    grads = accumulated_grads(model, chosen, data, loss_fn) if config.method == "taylor" else {}
    # Wanda scores every layer from one calibration pass over the dense model (its one-shot form)
    norms = input_norms(model, chosen, data) if config.method == "wanda" else {}
    generator = torch.Generator().manual_seed(config.seed)
    scores, keeps = {}, {}
    # sparsegpt is sequential: each layer's Hessian comes from inputs through the layers already
    # pruned, replayed block by block as GPTQ's calibration does
    layers = (sequential_inputs(model, chosen, model_inputs(data), skip_padding=False) if config.method == "sparsegpt"
              else ((name, layer, None) for name, layer in chosen))
    for name, layer, inputs in progress(layers, total=len(chosen), desc=f"pruning ({config.method})", unit="layer"):
        if config.method == "sparsegpt":
            weight, keeps[name] = sparsegpt(layer.weight, inputs.hessian, target_sparsity(name, config), nm=config.nm)
            with torch.no_grad():
                layer.weight.copy_(weight.to(layer.weight.dtype))
        elif config.method == "wanda":
            scores[name] = weight_scores("wanda", layer, input_norm=norms[name])
        else:
            scores[name] = weight_scores(config.method, layer, grad=grads.get(name), generator=generator)
    if config.nm is not None:
        keeps.update({name: M.nm_mask(s, *config.nm) for name, s in scores.items()})
    elif config.scope == "global":
        keeps.update(M.global_masks(scores, config.sparsity))
    else:
        pick = M.row_mask if config.method == "wanda" else M.layer_mask
        keeps.update({name: pick(s, target_sparsity(name, config)) for name, s in scores.items()})
    return keeps
