"""Structured pruning: remove whole channels, neurons and heads, so the model becomes a smaller dense model.

Channel groups come from the dependency graph (graph.py), heads from the attention units (units.py).
Each group's channels are scored by summing, over the layers producing them, the filter's L1 norm
(Li et al.), L2 norm, Taylor score |w * dL/dw| or, for ``bn_scale``, the |gamma| of the BatchNorm
layers following them. Per layer: each group loses ``round(ratio * size)`` channels; global: the
lowest channels of all groups, scores divided by their group's mean so that groups compare. A
group always keeps at least one channel (the report says when that clamp applied).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.losses import cross_entropy_loss
from slimkit.pruning.config import PruneConfig
from slimkit.pruning.graph import dependency_groups
from slimkit.pruning.importance import accumulated_grads, input_norms
from slimkit.pruning.modules import shrink_batchnorm, shrink_conv, shrink_linear
from slimkit.pruning.spaces import Space
from slimkit.pruning.unstructured import LayerReport
from slimkit.pruning.units import update_config
from slimkit.selection import linear_like


def prune_structure(model: nn.Module, config: PruneConfig, example_args: tuple, data: list | None,
                    loss_fn=cross_entropy_loss) -> tuple[list[LayerReport], list[str]]:
    """Shrink ``model`` in place; returns one report per channel group / attention unit and tracing notes."""
    linear_like(model)  # GPT-2's Conv1D projections become the Linear layers the graph knows
    groups, units, notes = dependency_groups(model, example_args, config.exclude)
    reports, live = [], []
    for g in groups:
        reason = g.blocked or _excluded(g, config)
        label = ", ".join(g.producers)
        if reason:
            reports.append(LayerReport(label, "channels", g.size, g.size, config.method, skipped=reason))
        else:
            live.append(g)
    for unit in [u for u in units if _excluded_unit(u, config)]:
        reports.append(LayerReport(unit.name, "heads", unit.n_head, unit.n_head, config.method,
                                   skipped=_excluded_unit(unit, config)))
    units = [u for u in units if not _excluded_unit(u, config)]
    _check_whole_groups(units, config)
    grads = _grads(model, live, units, config, data, loss_fn)
    norms = _norms(model, live, units, config, data)
    scores = [_group_scores(model, g, config, grads, norms) for g in live]
    head_scores = [_head_scores(model, u, config, grads, norms) for u in units]
    keeps = _keep(scores, config)
    head_keeps = _keep(head_scores, config)
    _apply_channels(model, live, keeps)
    for unit, keep, sc in zip(units, head_keeps, head_scores):
        before = unit.n_head
        unit.keep_heads(model, keep)
        reports.append(LayerReport(unit.name, "heads", before, len(keep), config.method, note=_clamp_note(sc, keep,
                                                                                                      config)))
    for g, keep, sc in zip(live, keeps, scores):
        reports.append(LayerReport(", ".join(g.producers), "channels", g.size, len(keep), config.method,
                                   note=_clamp_note(sc, keep, config)))
    update_config(model, units)
    return reports, notes


def _excluded(group: Space, config: PruneConfig) -> str | None:
    members = group.producers + [c[0] for c in group.channelwise + group.consumers]
    for name in members:
        if any(fnmatchcase(name, p) for p in config.exclude):
            return f"{name} matched by exclude {list(config.exclude)}"
    if config.include and not any(any(fnmatchcase(p, pat) for pat in config.include) for p in group.producers):
        return f"not matched by include {list(config.include)}"
    return None


def _check_whole_groups(units: list, config: PruneConfig) -> None:
    """Refuse a per-layer ratio that grouped-query attention cannot follow: its heads leave in whole key/value
    groups, so ``ratio * groups`` must be a whole number; the error names the nearest ratios that are."""
    for unit in units:
        share = config.ratio * unit.n_head
        if config.scope != "layer" or unit.group == 1 or abs(share - round(share)) < 1e-6:
            continue
        low, high = int(share), int(share) + 1
        options = [f"{k / unit.n_head:.4g} ({k} of {unit.n_head} groups)" for k in (low, high) if 0 < k < unit.n_head]
        use = f"Use ratio {' or '.join(options)}, or" if options else "Either"
        raise UserInputError(
            f"ratio {config.ratio} would remove {share:.3g} of the {unit.n_head} key/value head groups of "
            f"{unit.name} ({unit.group} query heads share each): grouped-query attention loses whole groups. {use} "
            f"keep attention whole with exclude=('{unit.name.rsplit('.', 2)[0]}.*.self_attn*',) (--exclude) and "
            "prune the MLP channels only")


def _excluded_unit(unit, config: PruneConfig) -> str | None:
    names = [unit.name] + unit.input_layers + [unit.output_layer]
    if any(fnmatchcase(n, p) for n in names for p in config.exclude):
        return f"matched by exclude {list(config.exclude)}"
    if config.include and not any(fnmatchcase(n, p) for n in names for p in config.include):
        return f"not matched by include {list(config.include)}"
    return None


def _grads(model, groups, units, config, data, loss_fn) -> dict[str, Tensor]:
    if config.method != "taylor":
        return {}
    from slimkit.errors import UserInputError

    if not data:
        raise UserInputError("method='taylor' needs data= (inputs, targets) batches for the gradients")
    names = {p for g in groups for p in g.producers} | {n for u in units for n in u.input_layers + [u.output_layer]}
    layers = [(n, model.get_submodule(n)) for n in sorted(names)]
    return accumulated_grads(model, layers, list(data)[:config.calibration_batches], loss_fn)


def _rows(method: str, weight: Tensor, grad: Tensor | None, dim: int = 0) -> Tensor:
    """Per-slice importance of ``weight`` along ``dim`` (0: output rows/filters, 1: input columns)."""
    w = weight.detach().float().transpose(0, dim).flatten(1)
    if method == "taylor":
        return (w * grad.float().transpose(0, dim).flatten(1)).abs().sum(1)
    if method == "l2":
        return w.square().sum(1)
    return w.abs().sum(1)


def _norms(model, groups, units, config, data) -> dict[str, Tensor]:
    """wanda: the input feature norms of every layer that reads a group's channels or a unit's heads."""
    if config.method != "wanda":
        return {}
    if not data:
        raise UserInputError("method='wanda' needs data= calibration batches for the activation norms")
    names = {use[0] for g in groups for use in g.consumers} | {u.output_layer for u in units}
    layers = [(n, model.get_submodule(n)) for n in sorted(names)]
    return input_norms(model, layers, list(data)[:config.calibration_batches])


def _column_scores(weight: Tensor, norm: Tensor) -> Tensor:
    """|W[:, j]|_1 * ||x_j||_2 for each input feature j of a Linear or Conv2d weight."""
    w = weight.detach().float().abs()
    return w.transpose(0, 1).flatten(1).sum(1) * norm


def _group_scores(model: nn.Module, group: Space, config: PruneConfig, grads: dict, norms: dict) -> Tensor:
    if config.method == "wanda":  # what the channel carries into the layers that read it
        total = torch.zeros(group.size)
        for name, offset, start, length in group.consumers:
            total[start:start + length] += _column_scores(model.get_submodule(name).weight,
                                                          norms[name])[offset:offset + length]
        return total
    if config.method == "random":
        return torch.rand(group.size, generator=torch.Generator().manual_seed(config.seed + group.size))
    if config.method == "bn_scale":
        gamma, seen = torch.zeros(group.size), False
        for name, offset, start, length in group.channelwise:
            norm = model.get_submodule(name)
            if isinstance(norm, nn.BatchNorm2d) and norm.affine:
                gamma[start:start + length] += norm.weight.detach().abs().float()[offset:offset + length]
                seen = True
        if seen:
            return gamma
    method = "l1" if config.method == "bn_scale" else config.method  # no BatchNorm follows: filter norms
    return sum(_rows(method, model.get_submodule(n).weight, grads.get(n)) for n in group.producers)


def _head_scores(model: nn.Module, unit, config: PruneConfig, grads: dict, norms: dict) -> Tensor:
    if config.method == "wanda":  # each head's columns of the output projection, weighted by what they carry
        weight = model.get_submodule(unit.output_layer).weight
        columns = _column_scores(weight, norms[unit.output_layer])
        for sliced, dim, idx in unit.head_slices(model):
            if sliced is weight and dim == 1:
                return columns[idx].sum(1)
        raise UserInputError(f"{unit.name}: its output projection's head columns are unknown; use method='l1'")
    if config.method == "random":
        return torch.rand(unit.n_head, generator=torch.Generator().manual_seed(config.seed + unit.n_head))
    method = "l1" if config.method == "bn_scale" else config.method
    names = {id(model.get_submodule(n).weight): n for n in unit.input_layers + [unit.output_layer]}
    total = torch.zeros(unit.n_head)
    for weight, dim, idx in unit.head_slices(model):
        slice_scores = _rows(method, weight, grads.get(names.get(id(weight)), None) if grads else None, dim)
        total += slice_scores[idx].sum(1)  # (heads,)
    return total


def _keep(scores: list[Tensor], config: PruneConfig) -> list[Tensor]:
    """Sorted indices kept per group: per layer, or one global ranking of mean-normalised scores."""
    if config.scope == "layer":
        return [_top(s, max(1, len(s) - round(config.ratio * len(s)))) for s in scores]
    normalised = [s / s.mean().clamp_min(1e-12) for s in scores]
    flat = torch.cat(normalised) if normalised else torch.zeros(0)
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)]) if scores else torch.zeros(0)
    left = [len(s) for s in scores]
    removed = [torch.zeros(len(s), dtype=torch.bool) for s in scores]
    budget = round(config.ratio * len(flat))
    start = torch.cat([torch.tensor([0]), torch.tensor(left).cumsum(0)]) if scores else None
    for i in flat.argsort(stable=True).tolist():
        if budget == 0:
            break
        g = int(owner[i])
        if left[g] > 1:
            removed[g][i - int(start[g])] = True
            left[g] -= 1
            budget -= 1
    return [(~r).nonzero().flatten() for r in removed]


def _top(scores: Tensor, count: int) -> Tensor:
    return scores.argsort(descending=True, stable=True)[:count].sort().values


def _clamp_note(scores: Tensor, keep: Tensor, config: PruneConfig) -> str | None:
    if config.scope == "layer" and len(scores) - round(config.ratio * len(scores)) < 1:
        return f"ratio {config.ratio} would remove all {len(scores)}; clamped to keep 1"
    return None


def _apply_channels(model: nn.Module, groups: list[Space], keeps: list[Tensor]) -> None:
    """Cut every member layer once: output rows of producers, input columns of consumers, BN/depthwise channels."""
    out_keep, channel_masks, in_masks = {}, {}, {}
    for g, keep in zip(groups, keeps):
        kept = torch.zeros(g.size, dtype=torch.bool)
        kept[keep] = True
        for name in g.producers:
            out_keep[name] = keep
        for masks, members in ((channel_masks, g.channelwise), (in_masks, g.consumers)):
            for name, offset, start, length in members:
                mask = masks.setdefault(name, torch.ones(_channels_in(model.get_submodule(name)), dtype=torch.bool))
                mask[offset:offset + length] &= kept[start:start + length]
    channel_keep = {name: m.nonzero().flatten() for name, m in channel_masks.items()}
    for name in set(out_keep) | set(channel_keep) | set(in_masks):
        layer = model.get_submodule(name)
        in_keep = in_masks[name].nonzero().flatten() if name in in_masks else None
        if isinstance(layer, nn.Linear):
            new = shrink_linear(layer, out_keep.get(name), in_keep)
        elif isinstance(layer, nn.Conv2d):
            new = shrink_conv(layer, out_keep.get(name, channel_keep.get(name)), in_keep)
        else:
            new = shrink_batchnorm(layer, channel_keep[name])
        model.set_submodule(name, new)


def _channels_in(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels if isinstance(layer, nn.Conv2d) \
        else layer.num_features
