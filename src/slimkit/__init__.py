"""slimkit: make neural networks smaller, faster and cheaper to train, and measure what it saved.

>>> import slimkit
>>> model = slimkit.models.zoo.reference("cnn")      # doctest: +SKIP
>>> slimkit.save(model, "out/cnn")                    # doctest: +SKIP
>>> record = slimkit.evaluate(slimkit.load("out/cnn"))  # doctest: +SKIP
"""

from slimkit import data, formats, models
from slimkit.adapters import lora
from slimkit.classes import register_class
from slimkit.deployment import export
from slimkit.distillation import DistillConfig, distill
from slimkit.errors import ArtifactError, MissingDependencyError, SlimkitError, UserInputError
from slimkit.evaluation import EvalRecord
from slimkit.io import load, save
from slimkit.lowrank import LowRankConfig, factorize
from slimkit.models.tasks import evaluate
from slimkit.pruning import PruneConfig, prune
from slimkit.quantization import WeightQuantConfig, quantize
from slimkit.training import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "DistillConfig", "EvalRecord", "LowRankConfig", "MissingDependencyError", "PruneConfig",
    "SlimkitError", "TrainConfig", "UserInputError", "WeightQuantConfig", "data", "distill", "evaluate", "export", "factorize", "formats", "load",
    "lora", "models", "prune", "quantize", "register_class", "save", "train",
]
