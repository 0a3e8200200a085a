"""The int8 arithmetic of activation quantization: quantize activations, int8 GEMM, dequantize.

The GEMM is ``torch._int_mm`` (int8 x int8 -> int32, exact); where it cannot run (CUDA wants
more than 16 rows and K, N multiples of 8), the same integer product is computed in float64,
which is exact for int8 operands. Quantizing the activation and rescaling the int32 result are
memory-bound chains of small ops; ``torch.compile`` fuses each chain into one loop (measured on
MiniLM's FFN shapes: 2-4x faster than eager), so they run compiled where a C++ compiler is
available and eagerly otherwise (same math; ``set_compiled(False)`` forces eager), for tensors of
at least ``COMPILE_MIN_ELEMENTS`` elements.

>>> codes, scale = quantize_tokens(torch.randn(32, 64))
>>> codes.dtype, scale.shape
(torch.int8, torch.Size([32, 1]))
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

QMAX = 127
# below this many elements a compiled call's fixed overhead outweighs the fusion, and small models
# (the digits MLP/CNN) never pay torch.compile's start-up time
COMPILE_MIN_ELEMENTS = 1 << 18

_state = {"compiled": True, "failed": None}
_compiled: dict = {}
_last_input: dict = {}  # the last activation quantized per token, so Q/K/V sharing an input quantize it once


def set_compiled(enabled: bool) -> None:
    """Run the quantize/rescale chains compiled (default) or eagerly."""
    _state["compiled"] = enabled


def compile_failure() -> str | None:
    """Why the compiled chains fell back to eager in this process (None if they did not)."""
    return _state["failed"]


def _tokens(x: Tensor, smooth: Tensor | None) -> tuple[Tensor, Tensor]:
    if smooth is not None:
        x = x * smooth
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / QMAX  # (rows, 1)
    return torch.round(x / scale).to(torch.int8), scale


def _static(x: Tensor, inv_scale: Tensor, smooth: Tensor | None) -> Tensor:
    if smooth is not None:
        x = x * smooth
    return torch.round(x * inv_scale).clamp(-QMAX, QMAX).to(torch.int8)


def _unsigned(x: Tensor, inv_scale: float, zero_point: int) -> Tensor:
    return torch.clamp(torch.round(x * inv_scale) + zero_point, 0, 255).to(torch.uint8)


def _rescale(acc: Tensor, row_scale: Tensor, col_scale: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    y = acc.float() * (row_scale * col_scale)
    if bias is not None:
        y = y + bias
    return torch.relu(y) if relu else y


def _run(fn, *args):
    if not _state["compiled"] or _state["failed"] or args[0].numel() < COMPILE_MIN_ELEMENTS:
        return fn(*args)
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=True)
    try:
        return _compiled[fn](*args)
    except Exception as exc:  # no C++ compiler, unsupported platform, ...: the eager math is the same
        _state["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"slimkit: compiled activation quantization unavailable ({_state['failed']}); "
                      "running eagerly", stacklevel=3)
        return fn(*args)


@torch.no_grad()
def quantize_tokens(x: Tensor, smooth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """int8 codes (rows, K) and one symmetric scale per row (rows, 1) of ``x * smooth``."""
    # Q, K and V get reshaped views of one tensor, quantized once (the quantization costs as much as
    # an int8 GEMM of MiniLM's 384x384 projections, measured). A view of the same memory with the same
    # dtype, shape, strides and version counter holds the same values; keeping ``x`` and ``smooth``
    # referenced keeps their memory from being reused by another tensor while the entry lives.
    key = (_identity(x), None if smooth is None else _identity(smooth))
    if key[0] is None or (smooth is not None and key[1] is None):
        return _run(_tokens, x, smooth)
    if _last_input.get("key") == key:
        return _last_input["out"]
    out = _run(_tokens, x, smooth)
    _last_input.update(key=key, x=x, smooth=smooth, out=out)
    return out


def _identity(t: Tensor) -> tuple | None:
    """What tells ``t``'s values apart from any other tensor's; None for an inference tensor (created under
    ``torch.inference_mode``), which has no version counter, so an in-place change to it would go unseen."""
    if t.is_inference():
        return None
    return t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape), t.stride()


@torch.no_grad()
def quantize_static(x: Tensor, scale: Tensor, smooth: Tensor | None = None) -> Tensor:
    """int8 codes of ``x * smooth`` on the fixed symmetric grid of ``scale`` (values beyond it clip)."""
    return _run(_static, x, 1.0 / scale, smooth)


@torch.no_grad()
def quantize_unsigned(x: Tensor, scale: float, zero_point: int) -> Tensor:
    """uint8 codes of ``x`` on the asymmetric grid (scale, zero point), as oneDNN's int8 convolution takes them."""
    return _run(_unsigned, x, 1.0 / scale, zero_point)


@torch.no_grad()
def rescale(acc: Tensor, row_scale: Tensor, col_scale: Tensor, bias: Tensor | None = None,
            relu: bool = False) -> Tensor:
    """float32 ``acc * row_scale * col_scale + bias`` (then ReLU if fused): int32 GEMM result back to floats."""
    return _run(_rescale, acc, row_scale, col_scale, bias, relu)


def int_mm_fits(a: Tensor, b: Tensor) -> str | None:
    """None when ``torch._int_mm`` can multiply these int8 operands, else the reason it cannot."""
    if not hasattr(torch, "_int_mm"):
        return "torch._int_mm is missing from this torch build"
    (m, k), n = a.shape, b.shape[1]
    if a.is_cuda and (m <= 16 or k % 8 or n % 8):
        return f"CUDA _int_mm needs rows > 16 and K, N multiples of 8 (got {m}x{k} @ {k}x{n})"
    return None


def int8_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Exact int32 product of int8 ``a`` (M, K) and int8 ``b`` (K, N)."""
    if int_mm_fits(a, b) is None:
        return torch._int_mm(a, b)
    return (a.double() @ b.double()).to(torch.int32)  # exact: |sum| < 2^53 for any practical K
