"""The machine line every report and benchmark table starts with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine_line(threads: int) -> str:
    """One line describing the machine, as every report and benchmark table starts with."""
    return (f"{_cpu_name()} ({platform.machine()}, {os.cpu_count()} logical cores), {threads} torch "
            f"thread(s), Python {platform.python_version()}, torch {torch.__version__}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
