"""One evaluation record per model variant, and its comparison with a baseline record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class EvalRecord:
    """Everything measured about one model variant on one task.

    ``metric``/``value`` is the primary quality figure (``higher_is_better`` says which way is
    good); ``quality`` holds all quality figures. ``artifact_bytes`` is the exact size of the
    saved artifact on disk. ``latency_ms`` is the median of ``latency_runs`` timed calls (a round that
    other processes' load slowed is timed again: ``slimkit.timing.latency_ms``) on a
    batch of ``latency_batch`` examples with ``threads`` torch threads. ``baseline`` names the
    record this one is compared with (None for a baseline itself). ``speedup``, when the variant was
    timed in alternating pairs with its baseline (``slimkit.timing.paired_speedup``), holds the
    per-pair ratio's median, quartiles and whether it is ``noisy``; ratios then come from it.
    """

    name: str
    task: str
    technique: str
    metric: str
    value: float
    higher_is_better: bool
    quality: dict[str, float]
    params: int
    nonzero: int
    artifact_bytes: int
    latency_ms: float
    latency_batch: int
    latency_runs: int
    threads: int
    peak_memory_bytes: int
    baseline: str | None = None
    notes: dict = field(default_factory=dict)
    speedup: dict | None = None

    def compare(self, base: EvalRecord) -> dict[str, float]:
        """Ratios against ``base``: how many times smaller/faster/leaner, and the quality change.

        ``quality_delta`` is signed so that positive is always better.
        """
        sign = 1.0 if self.higher_is_better else -1.0
        return {
            "quality_delta": sign * (self.value - base.value),
            "bytes_ratio": base.artifact_bytes / self.artifact_bytes,
            "speedup": self.speedup["median"] if self.speedup else base.latency_ms / self.latency_ms,
            "memory_ratio": base.peak_memory_bytes / self.peak_memory_bytes,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        return cls(**data)
