"""Naive, loop-by-loop reference formulas for the distillation losses (straight from the papers)."""

import math

import torch


def kd(student_logits, teacher_logits, temperature):
    """Hinton et al. 2015: T^2 * sum over positions of KL(p_t || p_s), p = softmax(z / T)."""
    total = 0.0
    for s_row, t_row in zip(student_logits.reshape(-1, student_logits.shape[-1]).tolist(),
                            teacher_logits.reshape(-1, teacher_logits.shape[-1]).tolist()):
        zs = [math.exp(v / temperature) for v in s_row]
        zt = [math.exp(v / temperature) for v in t_row]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    return temperature**2 * total


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def rkd_distance(s, t):
    """Park et al. 2019, eq. 4-5: pairwise distances divided by their mean over distinct pairs."""
    n = len(s)
    def dists(e):
        d = [[float(torch.dist(e[i], e[j])) for j in range(n)] for i in range(n)]
        mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mu for v in row] for row in d]
    ds, dt = dists(s), dists(t)
    return sum(huber(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / (n * n)


def rkd_angle(s, t):
    """Park et al. 2019, eq. 6-7: cos of the angle at j between i and k, over all triplets."""
    n = len(s)
    def angle(e, i, j, k):
        a, b = e[i] - e[j], e[k] - e[j]
        na, nb = float(a.norm()), float(b.norm())
        if na == 0 or nb == 0:
            return 0.0
        return float(a @ b) / (na * nb)
    return sum(huber(angle(s, i, j, k), angle(t, i, j, k))
               for i in range(n) for j in range(n) for k in range(n)) / n**3


def similarity_preserving(s, t):
    """Tung & Mori 2019, eq. 2-4."""
    def gram(e):
        g = e @ e.T
        return g / g.norm(dim=1, keepdim=True)
    b = len(s)
    return float(((gram(s) - gram(t)) ** 2).sum()) / b**2
