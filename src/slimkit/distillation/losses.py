"""Distillation losses: response (Hinton), feature, relation (RKD, similarity-preserving), attention transfer.

``kd_loss`` returns a *sum* over positions, like the training loop's losses (the loop divides by the
step's number of targets); the others return a mean, and the distiller scales them by the count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), summed over all positions (classes on the last dim).

    The T^2 factor keeps the gradient's size independent of T: d/dz_s = T * (p_s - p_t) (Hinton et al. 2015).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return temperature**2 * kl


def feature_loss(student: Tensor, teacher: Tensor, kind: str = "mse") -> Tensor:
    """Mean squared error, or mean (1 - cosine) over the feature dim, between two features of equal shape."""
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    dim = 1 if student.dim() == 4 else -1  # conv maps: channels; sequences/vectors: the last dim
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=dim)).mean()


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD distance loss (Park et al. 2019): Huber loss between mean-normalised pairwise distances."""
    def normalised_distances(e: Tensor) -> Tensor:
        d = torch.cdist(e, e)  # (B, B)
        return d / d[d > 0].mean().clamp_min(1e-12)

    s, t = _per_example(student), _per_example(teacher)
    with torch.no_grad():
        target = normalised_distances(t)
    return F.smooth_l1_loss(normalised_distances(s), target)


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD angle loss (Park et al. 2019): Huber loss between cosines of the angles of all example triplets."""
    def angles(e: Tensor) -> Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D): unit e_j - e_i
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of angle at i between j and k

    s, t = _per_example(student), _per_example(teacher)
    with torch.no_grad():
        target = angles(t)
    return F.smooth_l1_loss(angles(s), target)


def similarity_preserving(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving loss (Tung & Mori 2019): ||G_s - G_t||_F^2 / B^2 of row-normalised Gram matrices."""
    s, t = _per_example(student), _per_example(teacher)
    g_s = F.normalize(s @ s.T, p=2, dim=1)
    g_t = F.normalize(t @ t.T, p=2, dim=1)
    return (g_s - g_t).pow(2).sum() / s.shape[0] ** 2


def attention_map(feature: Tensor) -> Tensor:
    """Attention map of Zagoruyko & Komodakis (2017): mean of squares over channels, L2-normalised per example.

    Conv features (B, C, H, W) give a spatial map (B, H*W); transformer states (B, T, C) a map over tokens (B, T).
    """
    squared = feature.float().pow(2)
    amap = squared.mean(1) if feature.dim() == 4 else squared.mean(-1)
    return F.normalize(amap.flatten(1), p=2, dim=1)


def attention_transfer(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared distance between the attention maps of two features (any channel widths)."""
    return (attention_map(student) - attention_map(teacher)).pow(2).sum(1).mean()


def _per_example(feature: Tensor) -> Tensor:
    return feature.float().flatten(1)  # (B, everything else)
