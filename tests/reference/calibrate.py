"""Naive sequential calibration: for every layer, run the whole model from its input and stop at
that layer (quadratic in depth). The fast block-wise version must give the same statistics."""

from collections.abc import Mapping

import torch


class _Stop(Exception):
    pass


@torch.no_grad()
def naive_layer_inputs(model, layer, calib, max_rows=4096, skip_padding=True):
    """(hessian, sample rows, tokens) of ``layer``'s first input in each calibration batch."""
    hessian, rows, tokens = None, [], 0
    per_batch = -(-max_rows // max(1, len(calib)))
    mask = None

    def hook(_module, args):
        nonlocal hessian, tokens
        x = args[0].detach()
        if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
            x = x[mask.bool()]
        x = x.reshape(-1, x.shape[-1]).double()
        hessian = x.T @ x if hessian is None else hessian + x.T @ x
        tokens += x.shape[0]
        keep = torch.linspace(0, x.shape[0] - 1, min(per_batch, x.shape[0])).long()
        rows.append(x[keep].float())
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        for batch in calib:
            is_dict = isinstance(batch, Mapping)
            mask = batch.get("attention_mask") if is_dict and skip_padding else None
            try:
                model(**batch) if is_dict else model(batch)
            except _Stop:
                pass
    finally:
        handle.remove()
    return hessian, torch.cat(rows)[:max_rows], tokens
