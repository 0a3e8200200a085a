"""One generic minifloat codec: FP8 (E4M3, E5M2), FP4 (E2M1), fp16, bf16 and TF32.

A minifloat has a sign bit, `exp_bits` exponent bits with `bias`, and `man_bits` mantissa bits, with
subnormals. Three kinds differ only in what the top of the range means:

- "ieee": the all-ones exponent holds inf (mantissa 0) and NaN (E5M2, fp16, bf16, TF32).
  Finite overflow rounds to inf exactly as IEEE round-to-nearest-even does (E5M2: |v| >= 61440).
- "fn": only the all-ones code is NaN, no inf (E4M3 "fn", max 448). Overflow and inf saturate to
  +/-max, which is what torch's `.to(torch.float8_e4m3fn)` does.
- "finite": every code is a number (E2M1, max 6). Overflow saturates; NaN has no code and encodes as 0.

Codes are the format's bit pattern as an integer (sign in the top bit), e.g. fp16 codes equal
`x.half().view(torch.int16)` read as unsigned 16-bit. Inputs are first rounded to float32; the
arithmetic then runs in float64, where every step is exact.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MiniFloat:
    """Layout of a minifloat format.

    Example:
        >>> MINIFLOATS["fp8_e4m3"].max_value
        448.0
    """

    exp_bits: int
    man_bits: int
    bias: int
    kind: str  # "ieee" | "fn" | "finite"

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def top_magnitude(self) -> int:
        """All-ones magnitude code (sign bit clear)."""
        return 2 ** (self.exp_bits + self.man_bits) - 1

    @property
    def max_code(self) -> int:
        """Magnitude code of the largest finite value."""
        if self.kind == "ieee":
            return self.top_magnitude - 2**self.man_bits
        return self.top_magnitude - (self.kind == "fn")

    @property
    def max_value(self) -> float:
        return self._magnitude(self.max_code)

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def epsilon(self) -> float:
        """Distance from 1.0 to the next larger value."""
        return 2.0**-self.man_bits

    def _magnitude(self, code: int) -> float:
        exponent, mantissa = divmod(code, 2**self.man_bits)
        if exponent == 0:
            return mantissa * 2.0 ** (self.emin - self.man_bits)
        return (2**self.man_bits + mantissa) * 2.0 ** (exponent - self.bias - self.man_bits)


MINIFLOATS = {
    "fp8_e4m3": MiniFloat(exp_bits=4, man_bits=3, bias=7, kind="fn"),
    "fp8_e5m2": MiniFloat(exp_bits=5, man_bits=2, bias=15, kind="ieee"),
    "fp4_e2m1": MiniFloat(exp_bits=2, man_bits=1, bias=1, kind="finite"),
    "fp16": MiniFloat(exp_bits=5, man_bits=10, bias=15, kind="ieee"),
    "bf16": MiniFloat(exp_bits=8, man_bits=7, bias=127, kind="ieee"),
    "tf32": MiniFloat(exp_bits=8, man_bits=10, bias=127, kind="ieee"),
}


def encode_minifloat(v: Tensor, spec: MiniFloat) -> Tensor:
    """Round `v` to the nearest value of `spec` (ties to even) and return its bit pattern.

    Returns uint8 codes for formats of at most 8 bits, int32 otherwise.

    Example:
        >>> encode_minifloat(torch.tensor([1.0, -0.5, 5.0]), MINIFLOATS["fp4_e2m1"])  # 5 ties to 4
        tensor([2, 9, 6], dtype=torch.uint8)
    """
    v = v.float().double()
    # Above every finite value (and the inf threshold), small enough to keep the arithmetic finite.
    magnitude = v.abs().clamp(max=2.0 ** (2**spec.exp_bits - spec.bias))
    _, exponent = torch.frexp(magnitude)  # magnitude = m * 2^exponent, m in [0.5, 1)
    # Binade exponent, floored at emin so that subnormals (and zero) share the smallest normal's quantum.
    binade = torch.where(magnitude > 0, exponent - 1, spec.emin).clamp(min=spec.emin)
    steps = torch.round(torch.ldexp(magnitude, spec.man_bits - binade))  # in [0, 2^(man+1)]
    # steps == 2^(man+1) is the carry into the next binade; the sum below encodes it correctly.
    code = (binade - spec.emin) * 2**spec.man_bits + steps.long()
    code = code.clamp(max=spec.max_code if spec.kind != "ieee" else spec.max_code + 1)
    nan_code = 0 if spec.kind == "finite" else spec.top_magnitude
    code = torch.where(v.isnan(), nan_code, code)
    code = code | (v.signbit().long() << (spec.bits - 1))
    return code.to(torch.uint8 if spec.bits <= 8 else torch.int32)


def decode_minifloat(codes: Tensor, spec: MiniFloat) -> Tensor:
    """Values (float32) of the bit patterns `codes`.

    Example:
        >>> decode_minifloat(torch.tensor([2, 9, 7], dtype=torch.uint8), MINIFLOATS["fp4_e2m1"])
        tensor([ 1.0000, -0.5000,  6.0000])
    """
    codes = codes.long()
    magnitude = codes & spec.top_magnitude
    exponent, mantissa = magnitude >> spec.man_bits, magnitude & (2**spec.man_bits - 1)
    normal = exponent > 0
    significand = torch.where(normal, mantissa + 2**spec.man_bits, mantissa).double()
    value = torch.ldexp(significand, torch.where(normal, exponent, 1) - spec.bias - spec.man_bits)
    if spec.kind == "ieee":
        value = torch.where(magnitude > spec.max_code, torch.inf, value)
        value = torch.where(magnitude > spec.max_code + 1, torch.nan, value)
    elif spec.kind == "fn":
        value = torch.where(magnitude == spec.top_magnitude, torch.nan, value)
    sign = (codes >> (spec.bits - 1)) & 1
    return torch.where(sign.bool(), -value, value).float()

