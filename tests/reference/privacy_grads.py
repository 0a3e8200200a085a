"""Per-sample gradients the slow, obvious way: one forward and backward per example."""

from __future__ import annotations

import torch


def per_example_gradients(model, x, y, loss_fn) -> dict[str, torch.Tensor]:
    """{name: (B, *shape)}: example i's gradient of loss_fn(model(x[i:i+1]), y[i:i+1]).sum()."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    rows = []
    for i in range(len(y)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[i:i + 1]), y[i:i + 1]).sum().backward()
        rows.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    model.zero_grad(set_to_none=True)
    return {n: torch.stack([row[n] for row in rows]) for n in names}


def clipped_sum(grads: dict[str, torch.Tensor], max_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """sum_i g_i * min(1, C / ||g_i||) over all parameters jointly, and the norms ||g_i||."""
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()
    factors = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    return {n: (g * factors.view(-1, *[1] * (g.dim() - 1))).sum(0) for n, g in grads.items()}, norms
