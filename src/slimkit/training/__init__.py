"""Training with less: ``slimkit.train(model, data, TrainConfig(...))`` and its parts.

- ``config.py``: TrainConfig (precision, accumulation, checkpointing, schedule, optimizer, logging, resume).
- ``loop.py``: the loop itself; ``batches.py``: batch sources with a resumable position;
  ``precision.py``: autocast and loss scaling; ``checkpointing.py``: activation checkpointing;
  ``checkpoint.py``: resumable training checkpoints; ``metrics.py``: JSON lines / TensorBoard;
  ``callbacks.py``: the hooks techniques plug into.
"""

from slimkit.training.batches import (
    BatchSource,
    GeneratorBatches,
    IterableBatches,
    random_examples,
)
from slimkit.training.callbacks import Callback
from slimkit.training.checkpointing import disable_checkpointing, enable_checkpointing
from slimkit.training.config import OPTIMIZERS, PRECISIONS, TrainConfig
from slimkit.training.loop import (
    TrainingError,
    TrainResult,
    TrainState,
    cross_entropy_loss,
    train,
)

__all__ = [
    "OPTIMIZERS", "PRECISIONS", "BatchSource", "Callback", "GeneratorBatches", "IterableBatches", "TrainConfig",
    "TrainResult", "TrainState", "TrainingError", "cross_entropy_loss", "disable_checkpointing",
    "enable_checkpointing", "random_examples", "train",
]
