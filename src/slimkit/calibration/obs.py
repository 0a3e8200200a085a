"""The second-order (Optimal Brain Surgeon) column sweep that GPTQ and SparseGPT share.

A Linear weight W (out, in) is visited column by column. Column j is replaced by a target q_j (its
rounded values for GPTQ, its masked values for SparseGPT) and the error (w_j - q_j) / [H^-1]_jj is
pushed onto the columns not yet visited through row j of the upper Cholesky factor of the damped
inverse Hessian, so that the layer's output on the calibration inputs moves as little as possible.
Updates are lazy: inside a block of columns they are applied at once, and to the rest of the matrix
once per block (Frantar et al., 2022/2023).

>>> W, H = without_dead_inputs(weight, hessian)  # doctest: +SKIP
>>> Q = obs_sweep(W, inverse_hessian_factor(H, 0.01), 128, lambda block, i, col: block[:, i:i + 1].round())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# target(block, i, column) -> (out, 1): the value column ``column`` (index i inside ``block``) is set to
Target = Callable[[Tensor, int, int], Tensor]
# on_block(block, block_factor, start, end): called before a block's columns are visited
OnBlock = Callable[[Tensor, Tensor, int, int], None]


def without_dead_inputs(weight: Tensor, hessian: Tensor) -> tuple[Tensor, Tensor]:
    """(W float32, H float64) copies; inputs the calibration never saw (zero Hessian diagonal) get a unit
    diagonal and zero weights, so that H stays invertible and those columns contribute nothing."""
    W = weight.detach().float().clone()  # (out, in)
    H = hessian.detach().double().clone()  # (in, in); float64 keeps the Cholesky factorisation stable
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, H


def inverse_hessian_factor(H: Tensor, damp: float) -> Tensor:
    """The upper Cholesky factor (float32) of the inverse of ``H`` damped by ``damp`` times its mean
    diagonal (``H`` is damped in place)."""
    H.diagonal().add_(damp * H.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()


def obs_sweep(W: Tensor, Hinv: Tensor, block_size: int, target: Target, on_block: OnBlock | None = None) -> Tensor:
    """The swept weight (out, in): each column set to ``target`` in order, its error spread onto the later
    columns of ``W`` (updated in place) through ``Hinv`` (from ``inverse_hessian_factor``)."""
    cols = W.shape[1]
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        if on_block is not None:
            on_block(W1, Hinv1, i1, i2)
        for i in range(i2 - i1):
            w = W1[:, i:i + 1]  # (out, 1)
            q = target(W1, i, i1 + i)  # (out, 1)
            Q[:, i1 + i] = q[:, 0]
            err = (w - q) / Hinv1[i, i]  # (out, 1)
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i] = err[:, 0]
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q
