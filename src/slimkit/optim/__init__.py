"""Optimizers: AdamW with float32 moments and AdamW8bit with 8-bit block-wise quantized moments,
both running one AdamW step (``adamw_update_``); ``state_bytes`` measures any optimizer's state,
``adamw8bit_state_bytes`` predicts AdamW8bit's from tensor sizes.

Example:
    >>> import torch
    >>> from slimkit.optim import AdamW8bit, state_bytes
    >>> model = torch.nn.Linear(128, 64)
    >>> optimizer = AdamW8bit(model.parameters(), lr=1e-3)
"""

from slimkit.optim.adamw import AdamW, adamw_update_, state_bytes
from slimkit.optim.adamw8bit import AdamW8bit, adamw8bit_state_bytes

__all__ = ["AdamW", "AdamW8bit", "adamw8bit_state_bytes", "adamw_update_", "state_bytes"]
