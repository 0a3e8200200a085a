"""Bit packing of codes into bytes, and the byte layout of stored codes.

`pack` writes codes as one little-endian bit stream: code i occupies bits [i*bits, (i+1)*bits)
of the stream, byte 0 holding bits 0-7. So 4-bit codes go two per byte (low nibble first), 2-bit
codes four per byte, 3-bit codes eight per three bytes; the last byte is zero-padded.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from slimkit.errors import UserInputError


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that `numel` codes of `bits` bits take once stored (see `store_codes`).

    Example:
        >>> packed_nbytes(10, 3), packed_nbytes(10, 19)
        (4, 30)
    """
    return math.ceil(numel * bits / 8) if bits <= 8 else numel * math.ceil(bits / 8)


def pack(codes: Tensor, bits: int) -> Tensor:
    """Pack uint8 `codes` (each < 2^bits, any shape) into a flat uint8 bit stream.

    Example:
        >>> pack(torch.tensor([1, 2, 3], dtype=torch.uint8), 4)
        tensor([33,  3], dtype=torch.uint8)
    """
    _check_bits(bits)
    if codes.dtype != torch.uint8:
        raise UserInputError(f"pack expects uint8 codes, got {codes.dtype}; convert with codes.to(torch.uint8)")
    flat = codes.reshape(-1)
    if flat.numel() and int(flat.max()) >= 2**bits:
        raise UserInputError(f"codes up to {int(flat.max())} do not fit in {bits} bits; check the format's bits")
    if bits == 8:
        return flat.clone()
    # Eight codes make `bits` whole bytes: join them into one int64 word (< 2^56), then split it.
    words = F.pad(flat.long(), (0, -flat.numel() % 8)).reshape(-1, 8)  # (W, 8)
    word = (words << (torch.arange(8, device=flat.device) * bits)).sum(1, keepdim=True)  # (W, 1)
    stream = (word >> (torch.arange(bits, device=flat.device) * 8)) & 0xFF  # (W, bits)
    return stream.reshape(-1)[: packed_nbytes(flat.numel(), bits)].to(torch.uint8)


def unpack(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of `pack`: the first `numel` codes of a packed stream, flat uint8.

    Example:
        >>> unpack(torch.tensor([33, 3], dtype=torch.uint8), 4, 3)
        tensor([1, 2, 3], dtype=torch.uint8)
    """
    _check_bits(bits)
    _check_length(packed, packed_nbytes(numel, bits), f"{numel} codes of {bits} bits")
    flat = packed.reshape(-1)
    if bits == 8:
        return flat.clone()
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte, a fast path with byte shifts
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=flat.device)
        return ((flat.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1)[:numel]
    stream = F.pad(flat.long(), (0, -flat.numel() % bits)).reshape(-1, bits)  # (W, bits)
    word = (stream << (torch.arange(bits, device=flat.device) * 8)).sum(1, keepdim=True)  # (W, 1)
    codes = (word >> (torch.arange(8, device=flat.device) * bits)) & (2**bits - 1)  # (W, 8)
    return codes.reshape(-1)[:numel].to(torch.uint8)


def store_codes(codes: Tensor, bits: int) -> Tensor:
    """Codes as stored bytes: `pack` up to 8 bits; wider codes (fp16, bf16: 16 bits, tf32: 19 bits)
    take ceil(bits / 8) little-endian bytes each.

    Example:
        >>> store_codes(torch.tensor([0x3C00], dtype=torch.int32), 16)
        tensor([ 0, 60], dtype=torch.uint8)
    """
    if bits <= 8:
        return pack(codes, bits)
    shifts = torch.arange(math.ceil(bits / 8), device=codes.device) * 8
    return ((codes.reshape(-1, 1).long() >> shifts) & 0xFF).reshape(-1).to(torch.uint8)


def load_codes(stored: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of `store_codes`: flat codes (uint8 up to 8 bits, int32 above).

    Example:
        >>> load_codes(torch.tensor([0, 60], dtype=torch.uint8), 16, 1)
        tensor([15360], dtype=torch.int32)
    """
    if bits <= 8:
        return unpack(stored, bits, numel)
    _check_length(stored, packed_nbytes(numel, bits), f"{numel} codes of {bits} bits")
    width = math.ceil(bits / 8)
    shifts = torch.arange(width, device=stored.device) * 8
    return (stored.reshape(numel, width).long() << shifts).sum(1).to(torch.int32)


def _check_bits(bits: int) -> None:
    if bits not in range(1, 9):
        raise UserInputError(f"bits must be an integer from 1 to 8, got {bits!r}")


def _check_length(stored: Tensor, expected: int, what: str) -> None:
    if stored.dtype != torch.uint8 or stored.numel() != expected:
        raise UserInputError(
            f"{what} take {expected} uint8 bytes, got {stored.numel()} of {stored.dtype}; "
            "pass the tensor that pack() returned and the original numel"
        )
