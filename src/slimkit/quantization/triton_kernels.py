"""slimkit's own Triton kernels for quantized weights on CUDA: weight-only GEMV (int4 per group,
int8 per channel) and one-pass dequantization of 4-bit codes (NF4, symmetric int4) for training.

At one to a few rows of input (decoding), a Linear layer only streams its weight from memory, so a
kernel that reads 4-bit codes instead of bf16 values can be up to 4x faster. These kernels read the
stored codes exactly as ``slimkit.formats`` packs them (no second copy of the weight: the int4 codes
are two per byte, low nibble first; int8 codes are offset binary):

    W[n, k] = (code[n, k] - zero[n, k // group]) * scale[n, k // group],   y = x W^T

``zero`` is the code offset (8 for symmetric int4, 128 for int8) or the stored zero point; int8's
per-channel scale is applied once to the finished sums. Two kernels (measured on an H100 at
8192x8192, table in docs/benchmarks.md):

- one row (``ROW_KERNEL_ROWS``): ``_row_kernel``, fp32 FMAs without tensor cores. The codes are read
  as int32 words and become floats from their bits, each word's products are summed in the thread
  that holds it and scaled once (int4 2.34x and int8 1.65x of bf16 ``F.linear``).
- more rows: ``_int4_kernel`` / ``_int8_kernel`` dequantize a tile into registers and run it
  through the tensor cores (``tl.dot``, fp32 accumulation) for up to ``block_m`` (16) rows per read
  of the weight (int4 1.7-1.9x, int8 1.5x, flat from 2 to 16 rows).

Measured and dropped: one dot per group with the scale applied to its result (0.78x); split-K
with atomic adds (slower at every shape; still available as ``split_k``); prefetching the next
tile's words; a (BN, BK) accumulator of scaled products in the one-row kernel (1.65x); one
tensor-core dot per code position of a word (0.68x). Beyond a few rows a dense GEMM on a float
weight wins: ``choose_paths`` measures where, and checks each kernel's output before using it.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the kernels are simply not offered
    triton = None


def available(device: torch.device) -> bool:
    """Whether the Triton GEMV kernels can run on ``device`` (CUDA with Triton installed)."""
    return triton is not None and device.type == "cuda"


def block_k(in_features: int, group_size: int, largest: int = 1024) -> int | None:
    """The largest K tile up to ``largest`` (or one group), a multiple of the group and of 16, dividing ``in_features``."""
    for tile in (1024, 512, 256, 128, 64, 32, 16):
        if tile <= max(largest, group_size) and tile % group_size == 0 and in_features % tile == 0:
            return tile
    return None


# Launch shapes, chosen from H100 sweeps at 8192x8192 (python benchmarks/bench_gpu_gemv.py --sweep
# and --variants; tables in docs/benchmarks.md). block_k is an upper bound (see block_k()).
INT4_LAUNCH = dict(mode="tiles", block_m=16, block_n=32, block_k=512, split_k=1, num_warps=4, num_stages=3,
                   split_nibbles=False)
INT8_LAUNCH = dict(mode="tiles", block_m=16, block_n=32, block_k=512, split_k=1, num_warps=2, num_stages=4)
INT4_ROW_LAUNCH = dict(mode="row", block_n=8, block_k=1024, split_k=1, num_warps=4, num_stages=2)
INT8_ROW_LAUNCH = dict(mode="row", block_n=16, block_k=1024, split_k=1, num_warps=4, num_stages=2)
ROW_KERNEL_ROWS = 1  # inputs of up to this many rows run the row kernel, larger ones the tensor-core tiles

if triton is not None:

    @triton.jit
    def _scaled(codes, scale, zero, HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS_IN_TILE: tl.constexpr,
                WIDTH: tl.constexpr):
        """(BN, WIDTH) codes, their group's (BN, GROUPS_IN_TILE) scale and zero -> float32 weights."""
        codes = tl.reshape(codes, (BLOCK_N, GROUPS_IN_TILE, WIDTH // GROUPS_IN_TILE)).to(tl.float32)
        if HAS_ZERO:
            weight = (codes - zero[:, :, None]) * scale[:, :, None]
        else:
            weight = (codes - 8.0) * scale[:, :, None]
        return tl.reshape(weight, (BLOCK_N, WIDTH))

    @triton.jit
    def _int4_kernel(x_ptr, codes_ptr, scale_ptr, zero_ptr, y_ptr, M, N, K, GROUPS,
                     GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                     SPLIT_NIBBLES: tl.constexpr):
        m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok, n_ok = m < M, n < N
        half, k = tl.arange(0, BLOCK_K // 2), tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        span = K // SPLIT_K
        for k0 in range(tl.program_id(1) * span, (tl.program_id(1) + 1) * span, BLOCK_K):
            packed = tl.load(codes_ptr + n[:, None] * (K // 2) + (k0 // 2 + half)[None, :], mask=n_ok[:, None],
                             other=0)  # (BN, BK/2): code 2j in the low nibble, 2j+1 in the high one
            groups = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            offsets = n[:, None] * GROUPS + groups[None, :]
            scale = tl.load(scale_ptr + offsets, mask=n_ok[:, None], other=0.0).to(tl.float32)  # (BN, BK/G)
            zero = scale
            if HAS_ZERO:
                zero = tl.load(zero_ptr + offsets, mask=n_ok[:, None], other=0).to(tl.float32)
            if SPLIT_NIBBLES:  # even and odd columns as two dots: no interleaving of the nibbles
                x_rows = x_ptr + m[:, None] * K + (k0 + 2 * half)[None, :]
                x_even = tl.load(x_rows, mask=m_ok[:, None], other=0.0)  # (BM, BK/2)
                x_odd = tl.load(x_rows + 1, mask=m_ok[:, None], other=0.0)
                low = _scaled(packed & 0xF, scale, zero, HAS_ZERO, BLOCK_N, BLOCK_K // GROUP, BLOCK_K // 2)
                high = _scaled(packed >> 4, scale, zero, HAS_ZERO, BLOCK_N, BLOCK_K // GROUP, BLOCK_K // 2)
                acc += tl.dot(x_even, tl.trans(low.to(x_even.dtype)), input_precision=PRECISION)
                acc += tl.dot(x_odd, tl.trans(high.to(x_even.dtype)), input_precision=PRECISION)
            else:
                codes = tl.reshape(tl.join(packed & 0xF, packed >> 4), (BLOCK_N, BLOCK_K))
                x = tl.load(x_ptr + m[:, None] * K + (k0 + k)[None, :], mask=m_ok[:, None], other=0.0)  # (BM, BK)
                weight = _scaled(codes, scale, zero, HAS_ZERO, BLOCK_N, BLOCK_K // GROUP, BLOCK_K)
                acc += tl.dot(x, tl.trans(weight.to(x.dtype)), input_precision=PRECISION)
        _write(y_ptr, acc, m, n, m_ok, n_ok, N, SPLIT_K)

    @triton.jit
    def _int8_kernel(x_ptr, codes_ptr, scale_ptr, y_ptr, M, N, K, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok, n_ok = m < M, n < N
        k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        span = K // SPLIT_K
        for k0 in range(tl.program_id(1) * span, (tl.program_id(1) + 1) * span, BLOCK_K):
            codes = tl.load(codes_ptr + n[:, None] * K + (k0 + k)[None, :], mask=n_ok[:, None], other=128)
            x = tl.load(x_ptr + m[:, None] * K + (k0 + k)[None, :], mask=m_ok[:, None], other=0.0)
            weight = (codes.to(tl.int32) - 128).to(x.dtype)  # integers up to 127: exact in bf16/fp16
            acc += tl.dot(x, tl.trans(weight), input_precision=PRECISION)
        scale = tl.load(scale_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
        _write(y_ptr, acc * scale[None, :], m, n, m_ok, n_ok, N, SPLIT_K)

    @triton.jit
    def _as_floats(words, BITS: tl.constexpr):
        """(BN, W) int32 words -> (BN, W * 32 / BITS) float32 2^23 + code, codes in column order (code k of a
        row sits in bits BITS * (k % (32 / BITS)) of word k // (32 / BITS)). No conversion instruction (those
        run at a quarter of the FMA rate): code | 0x4B000000 read as fp32 is exactly 2^23 + code. The joins
        keep each word's codes in the thread that loaded it; each join appends an axis, the first one slowest,
        so pairing the codes 4 (int4) or 2 (int8) apart first puts them in column order."""
        MASK: tl.constexpr = (1 << BITS) - 1
        if BITS == 4:
            c0, c1, c2, c3 = words & MASK, (words >> 4) & MASK, (words >> 8) & MASK, (words >> 12) & MASK
            c4, c5, c6, c7 = (words >> 16) & MASK, (words >> 20) & MASK, (words >> 24) & MASK, (words >> 28) & MASK
            t = tl.join(tl.join(tl.join(c0, c4), tl.join(c2, c6)), tl.join(tl.join(c1, c5), tl.join(c3, c7)))
        else:
            c0, c1, c2, c3 = words & MASK, (words >> 8) & MASK, (words >> 16) & MASK, (words >> 24) & MASK
            t = tl.join(tl.join(c0, c2), tl.join(c1, c3))
        t = tl.reshape(t, (words.shape[0], words.shape[1] * (32 // BITS)))
        return (t | 0x4B000000).to(tl.float32, bitcast=True)

    @triton.jit
    def _row_words(words_ptr, n, n_ok, k0, K, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
        """The (BN, BK / per word) int32 words of one K tile."""
        PER_WORD: tl.constexpr = 32 // BITS
        j = tl.arange(0, BLOCK_K // PER_WORD)
        return tl.load(words_ptr + n[:, None] * (K // PER_WORD) + (k0 // PER_WORD + j)[None, :], mask=n_ok[:, None],
                       other=0)

    @triton.jit
    def _row_side(x_ptr, scale_ptr, zero_ptr, row, n, n_ok, k0, K, GROUPS, BITS: tl.constexpr, GROUP: tl.constexpr,
                  HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The small loads of one K tile: x (BK,), scale and zero (BN, BK / GROUP)."""
        x = tl.load(x_ptr + row * K + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)
        if GROUP == 0:  # per-channel scale: applied after the loop
            scale = tl.zeros((BLOCK_N, 1), dtype=tl.float32)
            zero = scale
        else:
            offsets = n[:, None] * GROUPS + (k0 // GROUP + tl.arange(0, BLOCK_K // GROUP))[None, :]
            scale = tl.load(scale_ptr + offsets, mask=n_ok[:, None], other=0.0).to(tl.float32)
            if HAS_ZERO:
                zero = tl.load(zero_ptr + offsets, mask=n_ok[:, None], other=0.0).to(tl.float32)
            else:
                zero = tl.full((BLOCK_N, BLOCK_K // GROUP), 1 << (BITS - 1), tl.float32)
        return x, scale, zero

    @triton.jit
    def _row_sums(words, x, scale, zero, BITS: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
        """One tile's (BN, words) sums: each word's codes times their activations, summed in the thread that
        holds the word and scaled once per word (measured on an H100: 26 us at 8192x8192 against 36 us for
        a (BN, BK) accumulator of scaled products)."""
        PER_WORD: tl.constexpr = 32 // BITS
        WORDS: tl.constexpr = BLOCK_K // PER_WORD
        codes = _as_floats(words, BITS)
        if GROUP == 0:  # per-channel scale: applied after the loop
            products = (codes - (8388608.0 + (1 << (BITS - 1)))) * x[None, :]
            sums = tl.sum(tl.reshape(products, (BLOCK_N, WORDS, PER_WORD)), axis=2)
        else:
            codes = tl.reshape(codes, (BLOCK_N, BLOCK_K // GROUP, GROUP))
            products = tl.reshape(codes - (8388608.0 + zero[:, :, None]), (BLOCK_N, BLOCK_K)) * x[None, :]
            sums = tl.sum(tl.reshape(products, (BLOCK_N, BLOCK_K // GROUP, GROUP // PER_WORD, PER_WORD)), axis=3)
            sums = tl.reshape(sums * scale[:, :, None], (BLOCK_N, WORDS))
        return sums

    @triton.jit
    def _row_kernel(x_ptr, words_ptr, scale_ptr, zero_ptr, y_ptr, M, N, K, GROUPS, BITS: tl.constexpr,
                    GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        """One row of x per program, no tensor cores: fp32 FMAs into a (BN, words) accumulator, reduced once
        at the end. GROUP == 0: one scale per output channel, applied to the sums; else a scale (and zero
        point) per group of GROUP codes. (Measured and dropped: issuing the next tile's loads before this
        tile's arithmetic, slower with the per-word sums.)"""
        row = tl.program_id(2) + tl.arange(0, BLOCK_M)  # BLOCK_M is 1
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        acc = tl.zeros((BLOCK_N, BLOCK_K // (32 // BITS)), dtype=tl.float32)
        start = tl.program_id(1) * (K // SPLIT_K)
        for k0 in range(start, start + K // SPLIT_K, BLOCK_K):
            words = _row_words(words_ptr, n, n_ok, k0, K, BITS, BLOCK_K)
            x, scale, zero = _row_side(x_ptr, scale_ptr, zero_ptr, row, n, n_ok, k0, K, GROUPS, BITS, GROUP, HAS_ZERO,
                                       BLOCK_N, BLOCK_K)
            acc += _row_sums(words, x, scale, zero, BITS, GROUP, BLOCK_N, BLOCK_K)
        out = tl.sum(acc, axis=1)
        if GROUP == 0:
            out = out * tl.load(scale_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
        _write(y_ptr, out[None, :], row, n, row < M, n_ok, N, SPLIT_K)

    @triton.jit
    def _write(y_ptr, acc, m, n, m_ok, n_ok, N, SPLIT_K: tl.constexpr):
        pointers, mask = y_ptr + m[:, None] * N + n[None, :], m_ok[:, None] & n_ok[None, :]
        if SPLIT_K == 1:
            tl.store(pointers, acc.to(y_ptr.dtype.element_ty), mask=mask)
        else:  # y is a zeroed fp32 buffer: the K slices add up there
            tl.atomic_add(pointers, acc, mask=mask, sem="relaxed")


    @triton.jit
    def _dequantize_4bit_kernel(codes_ptr, table_ptr, scale_ptr, out_ptr, BYTES, GROUP: tl.constexpr,
                                BLOCK: tl.constexpr):
        byte = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = byte < BYTES
        packed = tl.load(codes_ptr + byte, mask=ok, other=0)
        scale = tl.load(scale_ptr + (2 * byte) // GROUP, mask=ok, other=0.0).to(tl.float32)  # both codes: one group
        low = tl.load(table_ptr + (packed & 0xF)) * scale
        high = tl.load(table_ptr + (packed >> 4)) * scale
        values = tl.reshape(tl.join(low, high), (2 * BLOCK,))  # code 2j in the low nibble, 2j+1 in the high one
        index = 2 * tl.program_id(0) * BLOCK + tl.arange(0, 2 * BLOCK)
        tl.store(out_ptr + index, values.to(out_ptr.dtype.element_ty), mask=index < 2 * BYTES)


def dequantize_4bit(codes: Tensor, table: Tensor, scale: Tensor, group_size: int, shape: tuple[int, int],
                    dtype: torch.dtype) -> Tensor:
    """(rows, cols) weight of ``dtype`` from packed 4-bit codes in one pass: table[code] * scale[row, group].

    table: the 16 code values (fp32), e.g. the NF4 code book or ``arange(16) - 8`` for symmetric int4;
    scale: (rows, cols / group_size); ``cols`` a multiple of ``group_size``.
    """
    out = torch.empty(shape, dtype=dtype, device=codes.device)
    block = 1024
    _dequantize_4bit_kernel[(triton.cdiv(codes.numel(), block),)](codes, table, scale.contiguous(), out,
                                                                  codes.numel(), GROUP=group_size, BLOCK=block)
    return out


def _launch(kernel, x: Tensor, out_features: int, args: tuple, extra: dict, *, block_m: int, block_n: int,
            block_k: int, split_k: int, num_warps: int, num_stages: int, **variant) -> Tensor:
    rows, in_features = x.shape
    x = x.contiguous()
    split_k = split_k if in_features % (split_k * block_k) == 0 else 1
    y = (torch.empty(rows, out_features, dtype=x.dtype, device=x.device) if split_k == 1
         else torch.zeros(rows, out_features, dtype=torch.float32, device=x.device))
    grid = (triton.cdiv(out_features, block_n), split_k, triton.cdiv(rows, block_m))
    kernel[grid](x, *args, y, rows, out_features, in_features, **extra, BLOCK_M=block_m, BLOCK_N=block_n,
                 BLOCK_K=block_k, SPLIT_K=split_k, num_warps=num_warps, num_stages=num_stages,
                 **{name.upper(): value for name, value in variant.items()})
    return y.to(x.dtype)


def _chosen(x: Tensor, launch: dict, row_launch: dict, tiles_launch: dict, group: int) -> tuple[bool, dict]:
    """(whether the one-row kernel runs, its launch): ``launch["mode"]`` or, by default, the row count
    picks the kernel, whose default launch ``launch`` then updates; block_k is fitted to the input width."""
    mode = launch.get("mode") or ("row" if x.shape[0] <= ROW_KERNEL_ROWS else "tiles")
    chosen = {**(row_launch if mode == "row" else tiles_launch), **launch}
    del chosen["mode"]
    chosen["block_k"] = block_k(x.shape[1], group, chosen["block_k"])
    return mode == "row", chosen


def _row_launch(x: Tensor, codes: Tensor, scale: Tensor, zero: Tensor | None, bits: int, group: int,
                launch: dict) -> Tensor:
    """The FMA kernel, one row of x per program."""
    return _launch(_row_kernel, x, scale.shape[0], (codes.view(torch.int32), scale, scale if zero is None else zero),
                   {"GROUPS": scale.shape[1] if scale.dim() == 2 else 1, "BITS": bits, "GROUP": group,
                    "HAS_ZERO": zero is not None}, **{**launch, "block_m": 1})


def int4_gemv(x: Tensor, codes: Tensor, scale: Tensor, zero: Tensor | None, group_size: int, **launch) -> Tensor:
    """x (rows, K) @ W^T with W (N, K) int4 per group: codes (N*K/2,) uint8 as stored, scale (N, K/group)
    in any float dtype, zero (N, K/group) or None (symmetric: offset 8)."""
    row, launch = _chosen(x, launch, INT4_ROW_LAUNCH, INT4_LAUNCH, group_size)
    if row:
        return _row_launch(x, codes, scale, zero, 4, group_size, launch)
    return _launch(_int4_kernel, x, scale.shape[0], (codes, scale, scale if zero is None else zero),
                   dict(GROUPS=scale.shape[1], GROUP=group_size, HAS_ZERO=zero is not None,
                        PRECISION=_precision(x)), **launch)


def int8_gemv(x: Tensor, codes: Tensor, scale: Tensor, **launch) -> Tensor:
    """x (rows, K) @ W^T with W (N, K) int8 per output channel: codes (N*K,) uint8 offset binary, scale (N,)."""
    row, launch = _chosen(x, launch, INT8_ROW_LAUNCH, INT8_LAUNCH, 1)
    if row:
        return _row_launch(x, codes, scale, None, 8, 0, launch)
    return _launch(_int8_kernel, x, scale.shape[0], (codes, scale), {"PRECISION": _precision(x)}, **launch)


def _precision(x: Tensor) -> str:
    """tl.dot's precision: exact fp32 products for fp32 activations, the tensor cores' own otherwise."""
    return "ieee" if x.dtype == torch.float32 else "tf32"
