"""Knowledge distillation: ``slimkit.distill(teacher, student, data, DistillConfig(...), TrainConfig(...))``.

- ``losses.py``: response (KD), feature, relation (RKD, similarity-preserving) and attention-transfer losses.
- ``hooks.py``: capture outputs of named modules; ``config.py``: DistillConfig;
  ``distiller.py``: the distiller (offline, online, self), pseudo-labelling.
"""

from slimkit.distillation import losses
from slimkit.distillation.config import DistillConfig
from slimkit.distillation.distiller import Distillation, distill, pseudo_label
from slimkit.distillation.hooks import FeatureCapture

__all__ = ["DistillConfig", "Distillation", "FeatureCapture", "distill", "losses", "pseudo_label"]
