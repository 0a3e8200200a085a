"""GGUF's Q4_K: llama.cpp's quantizer (``quantize_row_q4_K_ref`` with ``make_qkx2_quants``), ported to torch.

A super-block of 256 weights holds float16 d and dmin, twelve bytes of 6-bit scales and minimums of its
eight sub-blocks of 32, and 128 bytes of 4-bit codes: x = d*ls*q - dmin*lm. Each sub-block's scale and
minimum come from a weighted search (weights |x| + rms(sub-block)) over 21 candidate ranges, fitting the
least-squares scale and minimum for each candidate's codes; a plain min/max choice is worse than Q4_0.
The `gguf` package only dequantizes Q4_K; this is the writer, and ``dequantize_q4_k`` the reader that
slimkit's Q4KLinear (a Q4_K layer imported from a GGUF file, its blocks kept as they are) computes with.
"""

from __future__ import annotations

import torch
from torch import Tensor

QK_K, SUB = 256, 32
BLOCK_BYTES = 144


def quantize_q4_k(weight: Tensor) -> Tensor:
    """(rows, cols/256*144) uint8 Q4_K blocks of a float (rows, cols) weight, cols a multiple of 256.

    >>> quantize_q4_k(torch.randn(2, 256)).shape
    torch.Size([2, 144])
    """
    rows, cols = weight.shape
    x = weight.detach().float().reshape(-1, QK_K // SUB, SUB)  # (blocks, 8, 32)
    weights = x.pow(2).mean(-1, keepdim=True).sqrt() + x.abs()
    scales, mins = _qkx2(x, weights)  # (blocks, 8) each; mins are the positive offsets
    max_scale, max_min = scales.amax(1, keepdim=True), mins.amax(1, keepdim=True)
    inv_scale = torch.where(max_scale > 0, 63 / max_scale, torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, 63 / max_min, torch.zeros_like(max_min))
    ls = torch.round(inv_scale * scales).clamp(max=63).to(torch.uint8)
    lm = torch.round(inv_min * mins).clamp(max=63).to(torch.uint8)
    d, dmin = (max_scale / 63).half(), (max_min / 63).half()  # (blocks, 1)
    sub_d, sub_m = d.float() * ls.float(), dmin.float() * lm.float()  # what the reader will use
    codes = torch.round((x + sub_m[..., None]) / sub_d[..., None]).clamp(0, 15)
    codes = torch.where(sub_d[..., None] == 0, torch.zeros_like(codes), codes).to(torch.uint8)  # (blocks, 8, 32)
    return torch.cat([d.view(torch.uint8), dmin.view(torch.uint8), _pack_scales(ls, lm), _pack_codes(codes)],
                     1).reshape(rows, cols // QK_K * BLOCK_BYTES)


def dequantize_q4_k(blocks: Tensor, shape: tuple[int, int]) -> Tensor:
    """float32 (rows, cols) weight of (rows, cols/256*144) uint8 Q4_K blocks (ggml's dequantize_row_q4_K).

    >>> w = torch.randn(2, 256)
    >>> (dequantize_q4_k(quantize_q4_k(w), (2, 256)) - w).abs().max() < 0.2 * w.abs().max()
    tensor(True)
    """
    rows, cols = shape
    raw = blocks.reshape(-1, BLOCK_BYTES)  # (super-blocks, 144)
    d = raw[:, 0:2].contiguous().view(torch.float16).float()  # (blocks, 1)
    dmin = raw[:, 2:4].contiguous().view(torch.float16).float()
    ls, lm = _unpack_scales(raw[:, 4:16])  # (blocks, 8) each
    codes = _unpack_codes(raw[:, 16:])  # (blocks, 8, 32)
    values = (d * ls.float())[..., None] * codes.float() - (dmin * lm.float())[..., None]
    return values.reshape(rows, cols)


def _unpack_scales(packed: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of ``_pack_scales``: the 6-bit (ls, lm) of the eight sub-blocks."""
    low, high = packed[:, 0:4], packed[:, 4:8]
    ls = torch.cat([low & 63, (packed[:, 8:12] & 15) | ((low >> 6) << 4)], 1)
    lm = torch.cat([high & 63, (packed[:, 8:12] >> 4) | ((high >> 6) << 4)], 1)
    return ls, lm


def _unpack_codes(packed: Tensor) -> Tensor:
    """Inverse of ``_pack_codes``: (blocks, 8 sub-blocks, 32) codes 0..15."""
    chunks = packed.reshape(packed.shape[0], 4, 1, SUB)
    return torch.cat([chunks & 15, chunks >> 4], 2).reshape(packed.shape[0], 8, SUB)


def _qkx2(x: Tensor, w: Tensor, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1, nstep: int = 20
          ) -> tuple[Tensor, Tensor]:
    """make_qkx2_quants on every sub-block at once: (scale, -min) per sub-block, the error weighted by ``w``."""
    low = x.amin(-1, keepdim=True).clamp(max=0)
    high = x.amax(-1, keepdim=True)
    span = high - low
    flat = span == 0
    span = torch.where(flat, torch.ones_like(span), span)
    sum_w, sum_x = w.sum(-1, keepdim=True), (w * x).sum(-1, keepdim=True)
    scale = span / nmax
    levels = torch.round((nmax / span) * (x - low)).clamp(0, nmax)
    best = (w * (scale * levels + low - x).pow(2)).sum(-1, keepdim=True)
    for step in range(nstep + 1):  # as in ggml, an improved minimum moves the range of the next candidates
        span = torch.where(flat, torch.ones_like(high), high - low)
        levels = torch.round(((rmin + rdelta * step + nmax) / span) * (x - low)).clamp(0, nmax)
        sum_l, sum_l2, sum_xl = (w * levels).sum(-1, keepdim=True), (w * levels ** 2).sum(-1, keepdim=True), \
            (w * levels * x).sum(-1, keepdim=True)
        det = sum_w * sum_l2 - sum_l * sum_l
        safe = torch.where(det > 0, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        positive = this_min > 0  # the minimum is kept <= 0: refit the scale alone
        this_scale = torch.where(positive, sum_xl / torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2)),
                                 this_scale)
        this_min = torch.where(positive, torch.zeros_like(this_min), this_min)
        err = (w * (this_scale * levels + this_min - x).pow(2)).sum(-1, keepdim=True)
        better = (det > 0) & (err < best)
        best = torch.where(better, err, best)
        scale, low = torch.where(better, this_scale, scale), torch.where(better, this_min, low)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale[..., 0], -low[..., 0]


def _pack_scales(ls: Tensor, lm: Tensor) -> Tensor:
    """The 12 scale bytes: 6-bit ls/lm of sub-blocks 0-3 in bytes 0-7, sub-blocks 4-7 split in nibbles with
    their top two bits in bits 6-7 of bytes 0-7 (ggml's get_scale_min_k4 layout)."""
    out = torch.zeros(ls.shape[0], 12, dtype=torch.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    return out


def _pack_codes(codes: Tensor) -> Tensor:
    """128 bytes: for each 64 values, byte l holds value l (low nibble) and value l + 32 (high nibble)."""
    pairs = codes.reshape(codes.shape[0], 4, 2, SUB)  # (blocks, chunk of 64, half, 32)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(codes.shape[0], 128)
