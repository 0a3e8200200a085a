"""Naive causal self-attention, written from the definition, to check the GPT's SDPA path."""

import math

import torch


def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(d) + causal mask) v for (B, H, T, d) tensors."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1) @ v
