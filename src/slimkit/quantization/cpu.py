"""What kind of processor this is, as far as the execution paths care: its model and vector extensions.

``choose_paths`` records ``signature()`` beside each choice; a choice loaded on a machine whose
signature differs is not trusted (see ``QuantLinear.from_slimkit_spec``). The flags are the ones
that change which path is fastest: AVX2/AVX-512 width, VNNI int8 dot products, native bf16, AMX tiles.

>>> sorted(signature("cpu"))
['cpu', 'flags']
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; (platform's processor, no flags) where it cannot be read."""
    name, flags = platform.processor() or "unknown CPU", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = frozenset(value.split())
            if flags and name:
                break
    except OSError:
        pass
    return name, flags


def flags() -> list[str]:
    """The FLAGS this CPU has, in FLAGS' order."""
    present = _cpuinfo()[1]
    return [flag for flag in FLAGS if flag in present]


def signature(device: torch.device | str) -> dict:
    """What a path measurement depends on: the CPU model and its FLAGS, or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"gpu": torch.cuda.get_device_name(device)}
    return {"cpu": _cpuinfo()[0], "flags": flags()}


def missing_bf16() -> str | None:
    """None when the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16), else why a bf16 copy of a
    weight is not offered (emulated bf16 measured 1.5-5x slower than float32 on an AVX-512 Xeon)."""
    if {"avx512_bf16", "amx_bf16"} & set(flags()):
        return None
    return "no native bf16 on this CPU (avx512_bf16/amx_bf16 flags absent): emulated bf16 is slower than float32"


_DISTRUSTED: set[str] = set()  # the CPUs whose choices this process has already said it set aside


def measured_elsewhere(measured_on: dict | None) -> bool:
    """True (said once per CPU and process) when paths recorded with ``measured_on`` were chosen on a
    CPU of another kind than this one: the caller then keeps its default path."""
    if not measured_on or "cpu" not in measured_on:
        return False
    here = signature("cpu")
    if measured_on == here:
        return False
    if measured_on["cpu"] not in _DISTRUSTED:
        _DISTRUSTED.add(measured_on["cpu"])
        warnings.warn(f"execution paths were measured on another CPU ({measured_on['cpu']}, "
                      f"{' '.join(measured_on.get('flags', []))}) than this one ({here['cpu']}, "
                      f"{' '.join(here['flags'])}): layers keep their default path; run "
                      "slimkit.quantization.paths.choose_paths(model) to measure them here", stacklevel=4)
    return True
