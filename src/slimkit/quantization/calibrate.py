"""Layer-by-layer calibration statistics with bounded memory.

For one layer at a time, the calibration batches run through the model (earlier layers already
quantized, as GPTQ's sequential mode does) and stop as soon as that layer has seen its input,
so only one layer's statistics exist at once: its Hessian X^T X (in x in) and a bounded sample
of input rows (for AWQ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class _StopForward(Exception):
    """Raised by the hook once the layer's input is captured: the rest of the model is not run."""


@dataclass
class LayerInputs:
    hessian: Tensor  # (in, in) float64: sum of x x^T over all calibration tokens
    sample: Tensor  # (<= max_rows, in) float32: evenly spaced rows of the input
    tokens: int


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, calib: list, *, max_rows: int = 4096) -> LayerInputs:
    """Run ``calib`` (model inputs: tensors or dicts of tensors) until ``layer`` and collect its inputs."""
    hessian, rows, tokens = None, [], 0
    per_batch = -(-max_rows // max(1, len(calib)))  # rows kept from each batch, so the sample stays bounded

    def hook(_module, args):
        nonlocal hessian, tokens
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (tokens, in)
        hessian = x.T @ x if hessian is None else hessian + x.T @ x
        tokens += x.shape[0]
        keep = torch.linspace(0, x.shape[0] - 1, min(per_batch, x.shape[0])).long()
        rows.append(x[keep].float())
        raise _StopForward

    handle = layer.register_forward_pre_hook(hook)
    try:
        for batch in calib:
            try:
                model(**batch) if isinstance(batch, Mapping) else model(batch)
            except _StopForward:
                pass
    finally:
        handle.remove()
    if hessian is None:
        raise RuntimeError("the layer never ran on the calibration data; is it used by the model's forward?")
    return LayerInputs(hessian, torch.cat(rows)[:max_rows], tokens)
