"""Naive low-rank references in numpy float64, written from the textbook definitions with loops.

Reconstructions are compared rather than factors: singular vectors are defined up to sign, the
projections onto their span are not.
"""

from __future__ import annotations

import numpy as np


def energy_rank(singular_values, energy: float) -> int:
    """Smallest r with sum_{i<r} s_i^2 >= energy * sum s_i^2, by walking the values."""
    total = sum(float(s) ** 2 for s in singular_values)
    kept = 0.0
    for r, s in enumerate(singular_values, start=1):
        kept += float(s) ** 2
        if kept >= energy * total - 1e-12 * total:
            return r
    return len(singular_values)


def truncated(matrix: np.ndarray, rank: int) -> np.ndarray:
    """The best rank-``rank`` approximation (Eckart-Young) of ``matrix``."""
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def leading_subspace(matrix: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal basis (rows, rank) of the leading eigenvectors of matrix @ matrix.T."""
    values, vectors = np.linalg.eigh(matrix @ matrix.T)
    return vectors[:, np.argsort(values)[::-1][:rank]]


def tucker2_reconstruction(weight: np.ndarray, r_out: int, r_in: int) -> np.ndarray:
    """W x_0 (U_out U_out^T) x_1 (U_in U_in^T), with the mode products written as loops."""
    c_out, c_in, kh, kw = weight.shape
    mode0 = weight.reshape(c_out, -1)
    mode1 = np.stack([weight[:, i].reshape(-1) for i in range(c_in)])  # (C_in, C_out kh kw)
    p_out = leading_subspace(mode0, r_out) @ leading_subspace(mode0, r_out).T  # (C_out, C_out)
    p_in = leading_subspace(mode1, r_in) @ leading_subspace(mode1, r_in).T  # (C_in, C_in)
    out = np.zeros_like(weight)
    for o in range(c_out):
        for i in range(c_in):
            for a in range(c_out):
                for b in range(c_in):
                    out[o, i] += p_out[o, a] * p_in[i, b] * weight[a, b]
    return out


def spatial_reconstruction(weight: np.ndarray, rank: int) -> np.ndarray:
    """Rank-``rank`` approximation of M[(i, h), (o, w)] = W[o, i, h, w], folded back into a kernel."""
    c_out, c_in, kh, kw = weight.shape
    matrix = np.zeros((c_in * kh, c_out * kw))
    for o in range(c_out):
        for i in range(c_in):
            for h in range(kh):
                for w in range(kw):
                    matrix[i * kh + h, o * kw + w] = weight[o, i, h, w]
    approx = truncated(matrix, rank)
    out = np.zeros_like(weight)
    for o in range(c_out):
        for i in range(c_in):
            for h in range(kh):
                for w in range(kw):
                    out[o, i, h, w] = approx[i * kh + h, o * kw + w]
    return out
