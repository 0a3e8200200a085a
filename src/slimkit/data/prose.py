"""English prose that ships with Python: the language reference topics of ``pydoc_data.topics``.

About 465 KB over 79 topics ("assert", "assignment", ...). Topics are assigned to calibration or
validation by a hash of their name, so the split is the same on every run and machine with the
same Python version; no topic contributes text to both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

# Percent of topics (by name hash) held out for validation.
_VALIDATION_PERCENT = 20


@dataclass(frozen=True)
class Prose:
    """Concatenated topic texts of each split (topics in name order) and the topic names."""

    calibration: str
    validation: str
    topics: dict[str, list[str]]


def _is_validation(topic: str) -> bool:
    digest = hashlib.sha256(topic.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < _VALIDATION_PERCENT


@lru_cache(maxsize=1)
def prose() -> Prose:
    """The calibration/validation split of the language reference.

    >>> len(prose().validation) > 50_000
    True
    """
    from pydoc_data.topics import topics

    names = {"calibration": [], "validation": []}
    for topic in sorted(topics):
        names["validation" if _is_validation(topic) else "calibration"].append(topic)
    text = {split: "\n\n".join(topics[t].strip() for t in chosen) for split, chosen in names.items()}
    return Prose(text["calibration"], text["validation"], names)
