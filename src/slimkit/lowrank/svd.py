"""Truncated SVD: rank rules shared by every factorization, and LowRankLinear.

A weight W (out, in) = U S V^T is replaced by the product of two thin matrices
(U_r sqrt(S_r)) (sqrt(S_r) V_r^T): a Linear in -> r followed by a Linear r -> out. The square
root of the singular values goes to both factors so that they start at the same scale, which
keeps a fine-tune afterwards well conditioned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slimkit.lowrank.config import LowRankConfig
from slimkit.classes import from_spec_record, spec_record


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The smallest r with sum_{i<r} s_i^2 >= energy * sum_i s_i^2 (values sorted descending).

    >>> energy_rank(torch.tensor([4.0, 3.0, 2.0, 1.0]), 25 / 30)
    2
    """
    squares = singular_values.double() ** 2
    kept = torch.cumsum(squares, 0)
    # a relative tolerance, so that an energy computed as a ratio of the same sums hits its rank exactly
    needed = energy * kept[-1].item() * (1 - 1e-12)
    return int((kept < needed).sum().item()) + 1


def budget_rank(rows: int, cols: int, budget: float) -> int:
    """The largest r whose factors r * (rows + cols) keep at most ``budget`` of rows * cols weights."""
    return math.floor(budget * rows * cols / (rows + cols))


def matrix_rank_rule(singular_values: Tensor, rows: int, cols: int, config: LowRankConfig) -> int:
    """The rank ``config`` asks for, for a rows x cols matrix with these singular values."""
    if config.rank is not None:
        return config.rank
    if config.energy is not None:
        return energy_rank(singular_values, config.energy)
    return budget_rank(rows, cols, config.param_budget)


def energy_kept(singular_values: Tensor, rank: int) -> float:
    """Fraction of the squared singular values (squared Frobenius norm) that rank ``rank`` keeps."""
    squares = singular_values.double() ** 2
    return (squares[:rank].sum() / squares.sum()).item() if squares.sum() > 0 else 1.0


def split_factors(u: Tensor, s: Tensor, vh: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(U_r sqrt(S_r), sqrt(S_r) V_r^T): the left (rows, r) and right (r, cols) factors."""
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


class LowRankLinear(nn.Module):
    """y = second(first(x)): a Linear in -> rank (no bias) then a Linear rank -> out (the bias).

    >>> layer = LowRankLinear.from_linear(nn.Linear(64, 32), rank=8)
    >>> layer(torch.randn(2, 64)).shape
    torch.Size([2, 32])
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 dtype: torch.dtype = torch.float32, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.has_bias, self.dtype_name = bias, str(dtype).removeprefix("torch.")
        self.first = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.second = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, rank: int, svd: tuple[Tensor, Tensor, Tensor] | None = None) -> LowRankLinear:
        """The rank-``rank`` truncated SVD of ``linear`` (``svd``: its float64 SVD, if already computed)."""
        weight = linear.weight
        u, s, vh = svd if svd is not None else torch.linalg.svd(weight.detach().double(), full_matrices=False)
        left, right = split_factors(u, s, vh, rank)  # (out, r), (r, in)
        layer = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, weight.dtype, weight.device)
        layer.first.weight.copy_(right)
        layer.second.weight.copy_(left)
        if linear.bias is not None:
            layer.second.bias.copy_(linear.bias)
        return layer.train(linear.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def full_weight(self) -> Tensor:
        """The (out, in) weight this layer computes with, as one matrix."""
        return self.second.weight @ self.first.weight

    def slimkit_spec(self) -> dict:
        """How ``slimkit.load`` rebuilds this layer empty; factors another transform replaced (e.g.
        QuantLinear after quantizing the factorized model) are recorded with their own specs."""
        children = {name: spec_record(m) for name, m in self.named_children() if hasattr(m, "slimkit_spec")}
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "bias": self.has_bias, "dtype": self.dtype_name, "children": children}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> LowRankLinear:
        """An empty layer of the right shapes; ``load_state_dict`` fills it."""
        layer = cls(spec["in_features"], spec["out_features"], spec["rank"], spec["bias"], getattr(torch, spec["dtype"]))
        for name, record in spec.get("children", {}).items():
            setattr(layer, name, from_spec_record(record, f"children.{name}"))
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
