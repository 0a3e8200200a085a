"""Importance of single weights: magnitude, L2, random, Taylor (|w * dL/dw|) and Wanda (|w| * ||x||).

Higher means more important; masks remove the lowest. Taylor needs (inputs, targets) batches and
accumulates the gradient of the summed cross-entropy over them; Wanda needs the layer's input
norms, which come from the calibration Hessian's diagonal (slimkit.quantization.calibrate).

>>> scores = weight_scores("magnitude", layer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.training.loop import cross_entropy_loss


def weight_scores(method: str, layer: nn.Module, *, grad: Tensor | None = None, input_norm: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per-weight importance, shaped like ``layer.weight``."""
    w = layer.weight.detach().float()
    if method == "magnitude":
        return w.abs()
    if method == "l2":
        return w.square()
    if method == "random":
        return torch.rand(w.shape, generator=generator)
    if method == "taylor":
        return (w * grad).abs()
    if method == "wanda":
        return w.abs() * input_norm.reshape(1, -1)  # (out, in) * (1, in)
    raise UserInputError(f"unknown importance {method!r}")


def accumulated_grads(model: nn.Module, layers: list[tuple[str, nn.Module]], data: list, loss_fn=cross_entropy_loss
                      ) -> dict[str, Tensor]:
    """{layer name: gradient of the summed loss over ``data`` w.r.t. its weight}; the model's grads are left as found."""
    saved = {id(p): p.grad for p in model.parameters()}
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()  # BatchNorm statistics and dropout stay as they are
    try:
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise UserInputError("taylor importance needs (inputs, targets) batches, e.g. "
                                     "task.training_batches(model, 64) or a list of (x, y) pairs")
            loss, _ = loss_fn(model, batch)
            loss.backward()
        grads = {name: layer.weight.grad.detach().clone() for name, layer in layers}
    finally:
        for p in model.parameters():
            p.grad = saved[id(p)]
        model.train(was_training)
    return grads


def model_inputs(data: list) -> list:
    """The model inputs of calibration batches given as inputs or (inputs, targets) pairs."""
    return [b[0] if isinstance(b, (tuple, list)) and not isinstance(b, Mapping) else b for b in data]
