"""Adapters: LoRA and QLoRA (``lora``), exposed as ``slimkit.lora``."""

from slimkit.adapters.config import LoRAConfig
from slimkit.adapters.layer import LoRALinear

__all__ = ["LoRAConfig", "LoRALinear"]
