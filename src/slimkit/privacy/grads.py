"""Per-sample gradient norms and the sum of per-sample gradients clipped to C, two ways.

Both give a loss tensor whose value is the summed per-example loss and whose gradient is
sum_i min(1, C / ||g_i||) g_i, so ``slimkit.train``'s one backward (with accumulation) does the rest.

- ``GhostClipping`` (every trainable parameter in an ``nn.Linear``): hooks keep each layer's input
  a_i and autograd gives its output gradient e_i; ||e_i^T a_i||_F^2 = <a_i a_i^T, e_i e_i^T> is the
  per-sample weight-gradient norm without materialising it (Goodfellow 2015; Li et al. 2021), then a
  second backward of sum_i c_i loss_i gives the clipped sum. Memory stays near non-private training.
- ``VmapClipping`` (any per-sample-safe model): ``torch.func.vmap`` over ``grad`` materialises every
  per-sample gradient (B times the parameters), clips and sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from slimkit.errors import UserInputError


def per_example_cross_entropy(output, targets: Tensor) -> Tensor:
    """Cross-entropy of each example (B,): classification logits (B, K), or token logits (B, T, K)
    averaged over each sequence's targets (-100 ignored)."""
    logits = getattr(output, "logits", output)
    if logits.dim() == 2:
        return F.cross_entropy(logits, targets, reduction="none")
    per_token = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=-100, reduction="none")
    counts = (targets != -100).flatten(1).sum(1).clamp(min=1)
    return per_token.view(len(targets), -1).sum(1) / counts


def clip_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    """min(1, C / ||g_i||): each example's gradient scaled to norm at most C."""
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)


def _with_value(surrogate: Tensor, losses: Tensor) -> Tensor:
    """The gradient of ``surrogate`` with the value of the summed per-example loss (what the loop reports)."""
    return surrogate + (losses.sum() - surrogate).detach()


def non_linear_parameters(model: nn.Module) -> list[str]:
    """Trainable parameters outside nn.Linear layers (ghost clipping applies when there are none)."""
    linear = {id(p) for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in linear]


class GhostClipping:
    """Per-sample norms of Linear layers from hooks, then one weighted backward (the loop's)."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)
                      and any(p.requires_grad for p in m.parameters(recurse=False))}
        self._captured: dict[nn.Module, tuple[Tensor, Tensor]] | None = None
        self._handles = [m.register_forward_hook(self._capture) for m in self.names]

    def _capture(self, module: nn.Module, inputs, output: Tensor) -> None:
        if self._captured is None:  # not inside clipped_loss (e.g. evaluation)
            return
        if module in self._captured:
            raise UserInputError(f"layer {self.names[module]!r} runs more than once per forward pass; ghost "
                                 "clipping needs one call per layer: use engine='vmap'")
        self._captured[module] = (inputs[0].detach(), output)

    def clipped_loss(self, model: nn.Module, x, y, loss_fn, max_grad_norm: float) -> tuple[Tensor, Tensor]:
        """(loss tensor for backward, per-sample gradient norms before clipping)."""
        self._captured = {}
        try:
            losses = loss_fn(model(x), y)  # (B,)
        finally:
            captured, self._captured = self._captured, None
        layers = list(captured)
        grads = torch.autograd.grad(losses.sum(), [captured[m][1] for m in layers], retain_graph=True,
                                    allow_unused=True)
        norms_sq = torch.zeros(len(losses), device=losses.device)
        for module, grad_out in zip(layers, grads):
            if grad_out is not None:
                norms_sq += _linear_norms_sq(module, captured[module][0], grad_out)
        norms = norms_sq.sqrt()
        weighted = (losses * clip_factors(norms, max_grad_norm).detach()).sum()
        return _with_value(weighted, losses), norms

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _linear_norms_sq(module: nn.Linear, a: Tensor, e: Tensor) -> Tensor:
    """Squared per-sample gradient norms of one Linear: input a (B, ..., in), output gradient e (B, ..., out)."""
    a = a.reshape(len(a), -1, a.shape[-1]).float()  # (B, T, in)
    e = e.reshape(len(e), -1, e.shape[-1]).float()  # (B, T, out)
    norms_sq = torch.zeros(len(a), device=a.device)
    if module.weight.requires_grad:
        tokens = a.shape[1]
        if tokens == 1:
            norms_sq += a.square().sum((1, 2)) * e.square().sum((1, 2))
        elif tokens * tokens <= a.shape[2] * e.shape[2]:  # the (T, T) Gram matrices are the smaller object
            norms_sq += (a @ a.transpose(1, 2) * (e @ e.transpose(1, 2))).sum((1, 2))
        else:
            norms_sq += torch.einsum("bto,bti->boi", e, a).square().sum((1, 2))
    if module.bias is not None and module.bias.requires_grad:
        norms_sq += e.sum(1).square().sum(1)
    return norms_sq


def per_sample_gradients(model: nn.Module, x, y, loss_fn) -> tuple[dict[str, Tensor], Tensor]:
    """Each example's gradient of every trainable parameter ({name: (B, *shape)}) and the losses (B,).

    >>> grads, losses = per_sample_gradients(mlp, x, y, per_example_cross_entropy)  # doctest: +SKIP
    """
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p for n, p in model.named_parameters() if not p.requires_grad} | dict(model.named_buffers())

    def one(params, xi, yi):
        out = functional_call(model, (params, fixed), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))[0]

    return vmap(grad_and_value(one), in_dims=(None, 0, 0), randomness="different")(trainable, x, y)


class VmapClipping:
    """Per-sample gradients with torch.func, clipped and summed; their sum reaches ``.grad`` in the backward."""

    def clipped_loss(self, model: nn.Module, x, y, loss_fn, max_grad_norm: float) -> tuple[Tensor, Tensor]:
        grads, losses = per_sample_gradients(model, x, y, loss_fn)
        norms = torch.stack([g.flatten(1).float().square().sum(1) for g in grads.values()]).sum(0).sqrt()
        factors = clip_factors(norms, max_grad_norm)
        params = dict(model.named_parameters())
        surrogate = sum((params[n] * torch.einsum("b,b...->...", factors.to(g.dtype), g)).sum()
                        for n, g in grads.items())
        return _with_value(surrogate, losses), norms

    def close(self) -> None:
        pass
