"""Sequential calibration statistics with bounded memory.

Layers are calibrated in order, each on inputs computed with the layers before it already
quantized (GPTQ's sequential mode): :func:`sequential_inputs` yields one layer's statistics, the
caller swaps the layer, then asks for the next. The statistics are its Hessian X^T X (in x in)
and a bounded sample of input rows (for AWQ).

Where the inputs come from, so that the model is not re-run from the start for every layer:

- A layer inside a block (an element of the model's outermost ``nn.ModuleList``, e.g. one
  transformer layer) is fed by re-running only that block on its captured inputs: the batches
  run once through the model up to the block and stop there, and the block's positional and
  keyword arguments are kept, for that one block only.
- Consecutive layers that read the same input tensor (query, key and value of one attention)
  are captured in one pass: quantizing one of them cannot change the others' input.
- Any other layer (a head outside the blocks) gets its inputs from the model run from the start.

Each pass stops as soon as the layers it waits for have seen their input, so the statistics are
identical to running the model from the start for every layer. With ``skip_padding``, rows where
a batch's ``attention_mask`` is 0 (padding) are left out of the statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class _StopForward(Exception):
    """Raised by a hook once the inputs a pass waits for are captured: the rest is not run."""


@dataclass
class LayerInputs:
    hessian: Tensor  # (in, in) float64: sum of x x^T over all calibration tokens
    sample: Tensor  # (<= max_rows, in) float32: evenly spaced rows of the input
    tokens: int


class _Collector:
    """One layer's running statistics."""

    def __init__(self, per_batch: int) -> None:
        self.hessian, self.rows, self.tokens, self.per_batch = None, [], 0, per_batch

    def add(self, x: Tensor, mask: Tensor | None) -> None:
        x = x.detach()
        if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
            x = x[mask.bool()]  # (real tokens, in): padding rows say nothing about real inputs
        x = x.reshape(-1, x.shape[-1]).double()  # (tokens, in)
        self.hessian = x.T @ x if self.hessian is None else self.hessian + x.T @ x
        self.tokens += x.shape[0]
        keep = torch.linspace(0, x.shape[0] - 1, min(self.per_batch, x.shape[0])).long()
        self.rows.append(x[keep].float())

    def result(self, max_rows: int) -> LayerInputs:
        return LayerInputs(self.hessian, torch.cat(self.rows)[:max_rows], self.tokens)


@torch.no_grad()
def sequential_inputs(model: nn.Module, layers: list[tuple[str, nn.Module]], calib: list, *,
                      max_rows: int = 4096, skip_padding: bool = True) -> Iterator[tuple[str, nn.Module, LayerInputs]]:
    """Yield (name, layer, inputs) for ``layers`` in order; replace each layer before the next.

    ``calib`` holds model inputs: tensors, or dicts of tensors passed as keyword arguments.

    >>> for name, layer, stats in sequential_inputs(model, chosen, calib):  # doctest: +SKIP
    ...     model.set_submodule(name, quantized(layer, stats.hessian))
    """
    masks, per_batch = _masks(calib, skip_padding), _per_batch(calib, max_rows)
    for block, segment in _segments(model, layers):
        if block is None:
            runs = [lambda b=batch: _call(model, b) for batch in calib]
        else:
            runs = [lambda a=args, k=kwargs: block(*_fresh(a), **_fresh(k))
                    for args, kwargs in _block_inputs(model, block, calib)]
        while segment:
            collectors = _capture_group([layer for _, layer in segment], runs, masks, per_batch)
            for (name, layer), collector in zip(segment, collectors):
                yield name, layer, collector.result(max_rows)
            segment = segment[len(collectors):]
        del runs  # the block's inputs: only one block's are held at a time


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, calib: list, *, max_rows: int = 4096,
                 skip_padding: bool = False) -> LayerInputs:
    """One layer's statistics, the model run from the start on every batch and stopped at ``layer``
    (the per-layer pass that :func:`sequential_inputs` replaced; bench_weight_quant times both).

    >>> hessian = layer_inputs(model, model.blocks[0].attn.qkv, calib).hessian  # doctest: +SKIP
    """
    runs = [lambda b=batch: _call(model, b) for batch in calib]
    return _capture_group([layer], runs, _masks(calib, skip_padding), _per_batch(calib, max_rows))[0].result(max_rows)


def _masks(calib: list, skip_padding: bool) -> list[Tensor | None]:
    return [batch.get("attention_mask") if skip_padding and isinstance(batch, Mapping) else None for batch in calib]


def _per_batch(calib: list, max_rows: int) -> int:
    """Rows kept from each batch, so that the sample stays bounded."""
    return -(-max_rows // max(1, len(calib)))


def _segments(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> list[tuple[nn.Module | None, list]]:
    """Runs of consecutive layers sharing a block (None: not inside a block)."""
    lists: list[str] = []  # outermost ModuleLists: named_modules lists parents before children
    blocks: dict[str, nn.Module] = {}  # "encoder.layer.3." -> that block
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(f"{outer}.") for outer in lists):
            lists.append(name)
            blocks.update({f"{name}.{i}." if name else f"{i}.": block for i, block in enumerate(module)})
    runs: list[tuple[nn.Module | None, list]] = []
    for name, layer in layers:
        block = next((b for prefix, b in blocks.items() if name.startswith(prefix)), None)
        if runs and block is not None and runs[-1][0] is block:
            runs[-1][1].append((name, layer))
        else:
            runs.append((block, [(name, layer)]))
    return runs


def _block_inputs(model: nn.Module, block: nn.Module, calib: list) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) ``block`` receives for each calibration batch (the model stops there)."""
    captured = []

    def hook(_module, args, kwargs):
        captured.append((args, kwargs))
        raise _StopForward

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calib:
            _call(model, batch)
    finally:
        handle.remove()
    if len(captured) != len(calib):
        raise RuntimeError("a block never ran on some calibration batches; is it used by the model's forward?")
    return captured


def _capture_group(layers: list[nn.Module], runs: list[Callable], masks: list, per_batch: int) -> list[_Collector]:
    """Statistics of ``layers[0]`` and of the layers right after it in ``layers`` that read the very
    same input tensor in the first batch (they run in that order, each with its first input only)."""
    collectors = [_Collector(per_batch) for _ in layers]
    size, shared, seen, batch = len(layers), None, set(), 0

    def hook(k: int, x: Tensor) -> None:
        nonlocal size, shared
        if batch == 0 and (k != len(seen) or (shared is not None and x is not shared)):
            size = len(seen)  # the group ends: this layer's input may depend on the ones before
            raise _StopForward
        if k < size and k not in seen:
            seen.add(k)
            shared = x if shared is None else shared
            collectors[k].add(x, masks[batch])
        if len(seen) == size:
            raise _StopForward

    handles = [layer.register_forward_pre_hook(lambda _m, args, k=k: hook(k, args[0]))
               for k, layer in enumerate(layers)]
    try:
        for batch, run in enumerate(runs):
            seen = set()
            try:
                run()
            except _StopForward:
                pass
            if batch == 0:
                size = len(seen)
    finally:
        for handle in handles:
            handle.remove()
    if size == 0:
        raise RuntimeError("the layer never ran on the calibration data; is it used by the model's forward?")
    return collectors[:size]


def _call(model: nn.Module, batch) -> None:
    try:
        model(**batch) if isinstance(batch, Mapping) else model(batch)
    except _StopForward:
        pass


def _fresh(value):
    """A copy of a block's captured arguments that a replay may change (tensors cloned, objects
    such as a key/value cache deep-copied) without changing what the next replay sees."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return copy.deepcopy(value)
