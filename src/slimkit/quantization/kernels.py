"""torch's weight-only int8/int4 matmul kernels, fed from slimkit's stored codes.

On CPU these kernels are fast with bf16 activations only (measured: at one row, int4 about 0.2x
of a bf16 F.linear and 0.1x of an fp32 one on an AVX512-BF16 machine), so the kernel paths cast
the activations to bf16 and the result back. Whether that wins for a given layer and batch size
is measured by ``paths.choose_paths``; a layer whose format or shape a kernel cannot take is
simply never offered that path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.formats import EncodedTensor, unpack

_INT4_GROUPS = (32, 64, 128, 256)


def kernel_for(enc: EncodedTensor) -> str | None:
    """"int4pack", "int8pack" or None: the torch kernel that can compute with this weight."""
    out_features, in_features = enc.shape
    aten = torch.ops.aten
    if (enc.fmt == "int4" and enc.granularity == "group" and enc.group_size in _INT4_GROUPS
            and in_features % enc.group_size == 0 and in_features % 16 == 0 and out_features % 8 == 0
            and hasattr(aten, "_weight_int4pack_mm_for_cpu")):
        return "int4pack"
    if (enc.fmt == "int8" and enc.granularity == "channel" and enc.symmetric
            and hasattr(aten, "_weight_int8pack_mm")):
        return "int8pack"
    return None


def prepare(enc: EncodedTensor, kernel: str) -> tuple[Tensor, Tensor]:
    """The kernel's own weight and scale layout, built from the stored codes (not saved; rebuilt on load)."""
    out_features, in_features = enc.shape
    codes = unpack(enc.codes, 8 if kernel == "int8pack" else 4, enc.numel).reshape(out_features, in_features)
    scale = enc.scales().float()  # (out, groups)
    if kernel == "int8pack":
        return (codes.int() - 128).to(torch.int8), scale[:, 0].to(torch.bfloat16)
    # tinygemm convention: w = (q - 8) * scale + zero, q in [0, 15]; slimkit: w = (code - zp) * scale
    zero = torch.zeros_like(scale) if enc.zero_point is None else (8 - enc.zero_point.float()) * scale
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1)
    scale_zero = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)  # (groups, out, 2)
    return packed, scale_zero


def run(kernel: str, weight: Tensor, scale: Tensor, group_size: int | None, x: Tensor) -> Tensor:
    """x (rows, in) in any float dtype -> (rows, out) in x's dtype, computed with bf16 activations."""
    xb = x.to(torch.bfloat16)
    if kernel == "int8pack":
        y = torch.ops.aten._weight_int8pack_mm(xb, weight, scale)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, weight, group_size, scale)
    return y.to(x.dtype)
