"""DistillConfig: what the student learns from the teacher, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from slimkit.configs import Config
from slimkit.errors import UserInputError

MODES = ("offline", "online", "self")
FEATURE_LOSSES = ("mse", "cosine")
RELATIONS = ("none", "rkd", "sp")
OUTPUT_LOSSES = ("kd", "cosine", "mse")


@dataclass(frozen=True)
class DistillConfig(Config):
    """How ``slimkit.distill`` trains the student.

    >>> DistillConfig(temperature=2.0, alpha=0.9, features=(("blocks.1", "blocks.3"),))  # doctest: +SKIP
    """

    WHAT: ClassVar[str] = "distillation"

    temperature: float = 2.0
    """Softens both distributions: T^2 * KL(softmax(z_t/T) || softmax(z_s/T))."""
    alpha: float = 0.5
    """Weight of the response (KD) loss; the hard-label cross-entropy gets 1 - alpha."""
    output_loss: str = "kd"
    """How the final outputs are matched: "kd" (softened logits, above) or, for models whose output is not
    logits (an encoder's last hidden states, padding positions left out), "cosine" or "mse" alone."""
    mode: str = "offline"
    """"offline": frozen teacher; "online": mutual learning, teacher and student both trained (Zhang et al.
    2018); "self": the teacher is an exponential moving average of the student itself (pass teacher=None)."""
    ema_decay: float = 0.99
    """Self mode: teacher <- decay * teacher + (1 - decay) * student after every step."""
    features: tuple[tuple[str, str], ...] = ()
    """(student module, teacher module) name pairs whose outputs are matched."""
    feature_loss: str = "mse"
    """"mse" or "cosine"; a learned linear projection maps the student's width to the teacher's when they differ."""
    feature_weight: float = 0.0
    """Weight of the feature loss (0: off)."""
    relation: str = "none"
    """Relation loss on the feature pairs (or the logits without features): "rkd" (distance + angle,
    Park et al. 2019), "sp" (similarity-preserving Gram matrices, Tung & Mori 2019) or "none"."""
    relation_weight: float = 0.0
    """Weight of the relation loss."""
    attention_weight: float = 0.0
    """Weight of attention transfer (Zagoruyko & Komodakis 2017) on the feature pairs."""
    cache_teacher: bool = False
    """Offline mode: keep the teacher's outputs for inputs seen before (fixed datasets, several epochs)."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UserInputError(f"temperature={self.temperature} must be positive (1-4 are usual)")
        if not 0 <= self.alpha <= 1:
            raise UserInputError(f"alpha={self.alpha} must lie in [0, 1]")
        if not 0 < self.ema_decay < 1:
            raise UserInputError(f"ema_decay={self.ema_decay} must lie in (0, 1)")
        for name, value, allowed in (("mode", self.mode, MODES), ("feature_loss", self.feature_loss, FEATURE_LOSSES),
                                     ("output_loss", self.output_loss, OUTPUT_LOSSES),
                                     ("relation", self.relation, RELATIONS)):
            if value not in allowed:
                raise UserInputError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name in ("feature_weight", "relation_weight", "attention_weight"):
            if getattr(self, name) < 0:
                raise UserInputError(f"{name}={getattr(self, name)} must be >= 0")
        pairs = tuple(tuple(pair) for pair in self.features)
        if any(len(pair) != 2 for pair in pairs):
            raise UserInputError(f"features={self.features!r}: give (student module, teacher module) pairs")
        object.__setattr__(self, "features", pairs)
        if (self.feature_weight or self.attention_weight) and not pairs:
            raise UserInputError("feature_weight/attention_weight need features=((student_name, teacher_name), ...)")
        if self.relation != "none" and not self.relation_weight:
            raise UserInputError(f"relation={self.relation!r} needs relation_weight > 0")

