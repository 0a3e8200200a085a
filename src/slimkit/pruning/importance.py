"""Importance of single weights: magnitude, L2, random, Taylor (|w * dL/dw|) and Wanda (|w| * ||x||).

Higher means more important; masks remove the lowest. Taylor needs (inputs, targets) batches and
accumulates the gradient of a loss over them (``loss_fn``, the training loop's signature; by default
the summed cross-entropy); Wanda needs the layer's input
norms, which come from the calibration Hessian's diagonal (slimkit.calibration.layer_inputs).

>>> scores = weight_scores("magnitude", layer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.losses import cross_entropy_loss


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
    """{layer name: gradient of the summed loss over ``data`` w.r.t. its weight}; the model's own grads are kept."""
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


@torch.no_grad()
def input_norms(model: nn.Module, layers: list[tuple[str, nn.Module]], data: list) -> dict[str, Tensor]:
    """{layer name: ||x_j||_2 of each input feature (a convolution's: each input channel) over every calibration
    token (and position)}, all layers in one pass."""
    sums: dict[str, Tensor] = {}
    hooks = []
    for name, layer in layers:
        def hook(_module, args, name=name):
            x = args[0].detach()
            if isinstance(_module, nn.Conv2d):
                x = x.movedim(1, -1)  # (N, H, W, C): a convolution's input features are its channels
            x = x.reshape(-1, x.shape[-1]).double()  # (tokens, in)
            sums[name] = sums.get(name, 0) + x.square().sum(0)
        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        for batch in model_inputs(data):
            model(**batch) if isinstance(batch, Mapping) else model(batch)
    finally:
        for h in hooks:
            h.remove()
    missing = [name for name, _ in layers if name not in sums]
    if missing:
        raise UserInputError(f"layer(s) {', '.join(missing)} never ran on the calibration data; exclude them")
    return {name: s.sqrt().float() for name, s in sums.items()}


def model_inputs(data: list) -> list:
    """The model inputs of calibration batches given as inputs or (inputs, targets) pairs."""
    return [b[0] if isinstance(b, (tuple, list)) and not isinstance(b, Mapping) else b for b in data]
