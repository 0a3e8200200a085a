"""Weight-only int8/int4 matmul kernels, fed from slimkit's stored codes.

CPU: torch's own kernels ("int4pack", "int8pack"). They are fast with bf16 activations only
(measured: at one row, int4 about 0.2x of a bf16 F.linear and 0.1x of an fp32 one on an
AVX512-BF16 machine), so these paths cast the activations to bf16 and the result back.
CUDA: slimkit's Triton GEMV kernels ("gemv_int4", "gemv_int8", see triton_kernels.py), which read the stored
codes in place. Whether a kernel wins for a given layer and batch size is measured by
``paths.choose_paths``; a layer whose format, shape or device a kernel cannot take is simply never
offered that path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import NF4_CODE, EncodedTensor, pack, unpack
from slimkit.formats.blockwise import on_device
from slimkit.quantization import triton_kernels

_INT4_GROUPS = (32, 64, 128, 256)
_INT4_CODES = torch.arange(16, dtype=torch.float32) - 8  # symmetric int4: code c means c - 8
KERNELS = ("int4pack", "int8pack", "gemv_int4", "gemv_int8")
OWN_LAYOUT = ("int4pack", "int8pack")  # kernels whose weight is a re-laid copy of the codes (the GEMV ones read them)


def kernel_for(meta: dict, device: torch.device) -> str | None:
    """The kernel that can compute on ``device`` with a weight of this encoding (``EncodedTensor.meta()``), or None."""
    out_features, in_features = meta["shape"]
    group_size = meta["group_size"]
    int4_grouped = meta["fmt"] == "int4" and meta["granularity"] == "group" and group_size in _INT4_GROUPS
    int4_groups = int4_grouped and in_features % group_size == 0
    int8_channels = meta["fmt"] == "int8" and meta["granularity"] == "channel" and meta["symmetric"]
    if device.type == "cuda":
        if not triton_kernels.available(device):
            return None
        if int4_groups and triton_kernels.block_k(in_features, group_size):
            return "gemv_int4"
        if int8_channels and triton_kernels.block_k(in_features, 1):
            return "gemv_int8"
        return None
    aten = torch.ops.aten
    # a last partial group (SmolLM2's 576 inputs in groups of 128) is padded to a whole one: see prepare
    if (int4_grouped and out_features % 16 == 0  # the packing wants N % 16 == 0
            and hasattr(aten, "_weight_int4pack_mm_for_cpu")):
        return "int4pack"
    if int8_channels and hasattr(aten, "_weight_int8pack_mm"):
        return "int8pack"
    return None


def prepare(enc: EncodedTensor, kernel: str) -> tuple[Tensor, Tensor]:
    """The kernel's own weight and scale layout, built from the stored codes (not saved; rebuilt on load).

    The GEMV kernels read the stored codes themselves: their "weight" is the codes tensor (no copy)
    and their "scale" is the stored scales (1, out, groups), or scales and zero points (2, out, groups).
    """
    out_features, in_features = enc.shape
    if kernel.startswith("gemv"):
        scale = enc.scales()
        parts = [scale] if enc.zero_point is None else [scale, enc.zero_point.to(scale.dtype)]
        return enc.codes, torch.stack(parts)
    scale = enc.scales().float()  # (out, groups)
    codes = unpack(enc.codes, 8 if kernel == "int8pack" else 4, enc.numel).reshape(out_features, in_features)
    if kernel == "int8pack":
        return (codes.int() - 128).to(torch.int8), scale[:, 0].to(torch.bfloat16)
    # tinygemm convention: w = (q - 8) * scale + zero, q in [0, 15]; slimkit: w = (code - zp) * scale
    zero = torch.zeros_like(scale) if enc.zero_point is None else (8 - enc.zero_point.float()) * scale
    # the kernel takes whole groups only: a partial last group is padded with codes whose inputs ``run``
    # pads with zeros, so they add nothing
    codes = torch.nn.functional.pad(codes, (0, -in_features % enc.group_size), value=8)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1)
    scale_zero = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)  # (groups, out, 2)
    return packed, scale_zero


def stored_codes(kernel: str, weight: Tensor, in_features: int, block_n: int | None = None) -> Tensor:
    """The packed codes ``prepare`` built ``weight`` from, exactly: what an OWN_LAYOUT kernel path keeps
    instead of them, so that a layer holds one copy of its weight. ``block_n``: see ``int4pack_block``."""
    if kernel == "int8pack":
        return pack((weight.to(torch.int16) + 128).to(torch.uint8), 8)
    codes = _int4_blocked(weight, block_n) if block_n else _int4pack_codes(weight)
    return pack(codes[:, :in_features].to(torch.uint8).contiguous(), 4)  # without the padding of a partial group


def int4pack_block(packed: Tensor, codes: Tensor) -> int | None:
    """The block width of the CPU int4 packing if ``packed`` is ``codes`` (out, in) in its plain blocked
    form (AVX-512 builds: blocks of 64 output rows, each byte holding rows j and j + 32 of one input
    column; AVX2: 32), which reads back in one pass; None for any other form (then every code's slot is
    found by packing its position, see ``_int4pack_codes``)."""
    for block_n in (64, 32):
        if codes.shape[0] % block_n == 0 and torch.equal(_int4_blocked(packed, block_n)[:, :codes.shape[1]],
                                                         codes.int()):
            return block_n
    return None


def _int4_blocked(packed: Tensor, block_n: int) -> Tensor:
    out_features, in_features = packed.shape[0], packed.shape[1] * 2
    blocks = packed.reshape(out_features // block_n, in_features, block_n // 2)  # (blocks, in, half a block)
    rows = torch.cat([blocks & 15, blocks >> 4], -1)  # (blocks, in, block_n)
    return rows.transpose(1, 2).reshape(out_features, in_features).int()


def _int4pack_codes(packed: Tensor) -> Tensor:
    """(out, in) int32 codes of ``_convert_weight_to_int4pack_for_cpu``'s output, whatever its layout.

    The packing moves each 4-bit code to a slot that depends only on its position and on the CPU
    build's vector width, not on its value: packing the positions' hexadecimal digits through the
    same function tells which position each slot came from."""
    out_features, in_features = packed.shape[0], packed.shape[1] * 2
    position = torch.arange(out_features * in_features, device=packed.device).reshape(out_features, in_features)
    source = torch.zeros(position.numel(), dtype=torch.int64, device=packed.device)
    for shift in range(0, max(position.numel() - 1, 1).bit_length(), 4):
        digits = torch.ops.aten._convert_weight_to_int4pack_for_cpu(((position >> shift) & 15).int(), 1)
        source |= _nibbles(digits) << shift
    codes = torch.empty_like(source, dtype=torch.int32)
    codes[source] = _nibbles(packed).int()
    return codes.reshape(out_features, in_features)


def _nibbles(packed: Tensor) -> Tensor:
    """Every 4-bit half of a uint8 tensor, flat int64 (low half first)."""
    return torch.stack([packed & 15, packed >> 4], -1).reshape(-1).long()


def run(kernel: str, weight: Tensor, scale: Tensor, group_size: int | None, x: Tensor) -> Tensor:
    """x (rows, in) in any float dtype -> (rows, out) in x's dtype."""
    if kernel == "gemv_int4":
        return triton_kernels.int4_gemv(x, weight, scale[0], scale[1] if len(scale) == 2 else None, group_size)
    if kernel == "gemv_int8":
        return triton_kernels.int8_gemv(x, weight, scale[0, :, 0])
    xb = x.to(torch.bfloat16)
    if kernel == "int8pack":
        y = torch.ops.aten._weight_int8pack_mm(xb, weight, scale)
    else:
        padding = weight.shape[1] * 2 - xb.shape[-1]  # the inputs of a partial last group's padding: zeros
        xb = torch.nn.functional.pad(xb, (0, padding)) if padding else xb
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, weight, group_size, scale)
    return y.to(x.dtype)


def dequantize(enc: EncodedTensor, dtype: torch.dtype) -> Tensor | None:
    """The weight in ``dtype`` in one CUDA kernel pass (NF4 or symmetric int4 per group), or None when
    that kernel does not apply (then ``enc.dequantize()`` does the work). QLoRA training dequantizes
    every base weight twice per step, so this is its hot path on a GPU."""
    out_features, in_features = enc.shape
    if not (triton_kernels.available(enc.codes.device) and enc.granularity == "group"
            and in_features % enc.group_size == 0
            and (enc.fmt == "nf4" or (enc.fmt == "int4" and enc.zero_point is None))):
        return None
    table = on_device(NF4_CODE if enc.fmt == "nf4" else _INT4_CODES, enc.codes.device)
    return triton_kernels.dequantize_4bit(enc.codes, table, enc.scales(), enc.group_size,
                                          (out_features, in_features), dtype)
