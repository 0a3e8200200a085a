"""Number formats: pure functions on tensors and one container for encoded tensors.

Formats: int2..int8 (symmetric or asymmetric), nf4, fp8_e4m3, fp8_e5m2, fp4_e2m1, fp16, bf16, tf32,
binary, ternary. `quantize` / `dequantize` work on whole tensors (per tensor, channel or group, with
optional double quantization of the scales); `qparams` / `encode` / `decode` are the building blocks.

Example:
    >>> import torch
    >>> from slimkit import formats
    >>> enc = formats.quantize(torch.randn(64, 256), "nf4", group_size=64, double_quant=True)
    >>> formats.dequantize(enc).shape
    torch.Size([64, 256])
"""

from slimkit.formats.codec import decode, encode, fake_quantize, qparams, round_float
from slimkit.formats.doublequant import double_quant_bits
from slimkit.formats.encoded import EncodedTensor
from slimkit.formats.layout import GRANULARITIES, Granularity, PerChannel, PerGroup, PerTensor, as_granularity
from slimkit.formats.minifloat import MINIFLOATS, MiniFloat
from slimkit.formats.nf4 import NF4_CODE
from slimkit.formats.packing import pack, unpack
from slimkit.formats.quantize import dequantize, quantize
from slimkit.formats.registry import FORMAT_NAMES, check_format, format_bits
from slimkit.formats.table import format_table

__all__ = [
    "FORMAT_NAMES",
    "GRANULARITIES",
    "MINIFLOATS",
    "NF4_CODE",
    "EncodedTensor",
    "Granularity",
    "PerChannel",
    "PerGroup",
    "PerTensor",
    "as_granularity",
    "MiniFloat",
    "check_format",
    "decode",
    "dequantize",
    "double_quant_bits",
    "encode",
    "fake_quantize",
    "format_bits",
    "format_table",
    "pack",
    "qparams",
    "quantize",
    "round_float",
    "unpack",
]
