"""Naive pruning references written from the papers' definitions with Python loops (no torch ops shared).

Masks here break ties by position, as slimkit does (a stable sort), so masks compare exactly.
"""

from __future__ import annotations


def magnitude_keep(values: list[float], sparsity: float) -> list[bool]:
    """Keep flags: the round(sparsity * n) smallest |values| pruned, earlier positions first among equals."""
    count = round(sparsity * len(values))
    order = sorted(range(len(values)), key=lambda i: (abs(values[i]), i))
    pruned = set(order[:count])
    return [i not in pruned for i in range(len(values))]


def nm_keep(row: list[float], n: int, m: int) -> list[bool]:
    """Keep flags of one row: in every block of m consecutive weights, the n largest |w| survive."""
    keep = []
    for start in range(0, len(row), m):
        block = row[start:start + m]
        best = sorted(range(len(block)), key=lambda i: -abs(block[i]))[:n]
        keep += [i in best for i in range(len(block))]
    return keep


def zhu_gupta(step: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017), eq. 1: s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n dt))^3 for t_0 <= t <= t_0 + n dt."""
    if step < start:
        return initial
    t = min(step, end)
    return final + (initial - final) * (1 - (t - start) / (end - start)) ** 3


def wanda_scores(weight: list[list[float]], inputs: list[list[float]]) -> list[list[float]]:
    """Sun et al. (2023): S_ij = |W_ij| * ||X_j||_2 over all input rows."""
    norms = [sum(row[j] ** 2 for row in inputs) ** 0.5 for j in range(len(weight[0]))]
    return [[abs(w) * norms[j] for j, w in enumerate(row)] for row in weight]
