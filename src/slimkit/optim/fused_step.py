"""The 8-bit AdamW step as one Triton kernel on CUDA: decode, AdamW, block absmax, encode.

``AdamW8bit`` on its own runs a dozen torch operations per parameter tensor (decode both
moments, ``adamw_update_``, find each block's absmax, look up the nearest codes); on a GPU the
step then spends its time launching them (measured on an H100: 220 ms per step of a 203M GPT
against bitsandbytes' fused 55 ms). This kernel does the same arithmetic in one pass, one block
of ``block_size`` elements per program, and writes the same state: the codes and absmax of the
unfused path, equal up to float rounding (tested against it). Each new code is the nearest entry
of the code book, found by a branchless binary search over its 255 midpoints (a tie goes to the
lower code, as ``torch.bucketize`` does).

Status: checked against the unfused step in Triton's interpreter (parameters equal to 1 ulp, codes
identical); it has not yet run on a GPU (the session that wrote it had used its GPU time). If it
fails to compile or launch there, ``disable`` warns once and every later step takes the unfused path.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from slimkit.formats.blockwise import CodeBook, on_device
from slimkit.formats.reduce import TINY

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the unfused step runs
    triton = None


_disabled: list[str] = []  # the error that switched the fused step off in this process, if any


def disable(error: Exception) -> None:
    """Switch the fused step off for this process, with one warning that says why."""
    if not _disabled:
        _disabled.append(f"{type(error).__name__}: {error}")
        warnings.warn(f"slimkit's fused 8-bit AdamW kernel failed ({_disabled[0][:200]}); using the unfused "
                      "step (same results, slower on a GPU). Please report this with your GPU and Triton "
                      "versions.", RuntimeWarning, stacklevel=3)


def applies(param: Tensor, state: dict[str, Tensor]) -> bool:
    """Whether the fused step can update ``param``: a contiguous float32 CUDA tensor with flat
    8-bit block states (row-blocked states of sharded parameters take the unfused path)."""
    return (triton is not None and not _disabled and param.is_cuda and not isinstance(param, DTensor)
            and param.dtype == torch.float32 and param.is_contiguous()
            and "exp_avg_codes" in state and state["exp_avg_absmax"].dim() == 1)


def fused_step(param: Tensor, state: dict[str, Tensor], books: tuple[CodeBook, CodeBook], step: int, *,
               block_size: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """One AdamW step of ``param`` with its 8-bit moments, in place (``step`` counts from 1)."""
    numel = param.numel()
    device = param.device
    signed, unsigned = books
    _adamw8bit_kernel[(triton.cdiv(numel, block_size),)](
        param, param.grad.reshape(-1), state["exp_avg_codes"], state["exp_avg_sq_codes"],
        state["exp_avg_absmax"], state["exp_avg_sq_absmax"], on_device(signed.values, device),
        on_device(unsigned.values, device), on_device(signed.midpoints, device),
        on_device(unsigned.midpoints, device), numel,
        1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2, eps, (1 - beta2**step) ** 0.5, -lr / (1 - beta1**step),
        TINY, BLOCK=block_size)


if triton is not None:

    @triton.jit
    def _nearest(x, midpoints_ptr):
        """Index of the nearest code: the count of midpoints below x (midpoints[255] is +inf)."""
        count = tl.zeros(x.shape, dtype=tl.int32)
        for bit in tl.static_range(8):
            half = 128 >> bit
            count += tl.where(tl.load(midpoints_ptr + count + half - 1) < x, half, 0)
        return count

    @triton.jit
    def _adamw8bit_kernel(p_ptr, g_ptr, m_codes_ptr, v_codes_ptr, m_absmax_ptr, v_absmax_ptr, m_values_ptr,
                          v_values_ptr, m_mid_ptr, v_mid_ptr, numel, decay, one_minus_beta1, beta2,
                          one_minus_beta2, eps, bias_correction2_sqrt, step_size, tiny, BLOCK: tl.constexpr):
        block = tl.program_id(0)
        offsets = block * BLOCK + tl.arange(0, BLOCK)
        ok = offsets < numel
        p = tl.load(p_ptr + offsets, mask=ok, other=0.0)
        g = tl.load(g_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        m_codes = tl.load(m_codes_ptr + offsets, mask=ok, other=0).to(tl.int32)
        v_codes = tl.load(v_codes_ptr + offsets, mask=ok, other=0).to(tl.int32)
        m = tl.load(m_values_ptr + m_codes) * tl.load(m_absmax_ptr + block)
        v = tl.load(v_values_ptr + v_codes) * tl.load(v_absmax_ptr + block)
        # adamw_update_, term by term
        p = p * decay
        m = m + one_minus_beta1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        p = p + step_size * (m / (tl.sqrt(v) / bias_correction2_sqrt + eps))
        tl.store(p_ptr + offsets, p, mask=ok)
        # blockwise_encode: absmax over the block (padding counts as zero), nearest code of m / absmax
        m = tl.where(ok, m, 0.0)
        v = tl.where(ok, v, 0.0)
        m_absmax = tl.maximum(tl.max(tl.abs(m), axis=0), tiny)
        v_absmax = tl.maximum(tl.max(tl.abs(v), axis=0), tiny)
        tl.store(m_codes_ptr + offsets, _nearest(m / m_absmax, m_mid_ptr).to(tl.uint8), mask=ok)
        tl.store(v_codes_ptr + offsets, _nearest(v / v_absmax, v_mid_ptr).to(tl.uint8), mask=ok)
        tl.store(m_absmax_ptr + block, m_absmax)
        tl.store(v_absmax_ptr + block, v_absmax)
