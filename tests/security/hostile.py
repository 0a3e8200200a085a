"""Helpers of the hostile-artifact tests: edits an attacker makes, with the digest recomputed as they would."""

import json
from pathlib import Path

from slimkit.description import ALGORITHM, digest


def edit_meta(path: Path, change) -> dict:
    """Apply ``change(meta)`` to ``path/slimkit.json`` and re-sign it (whoever writes the JSON writes the digest)."""
    meta = json.loads((Path(path) / "slimkit.json").read_text())
    change(meta)
    resign(path, meta)
    return meta


def resign(path: Path, meta: dict) -> None:
    """Write ``meta`` with a correct digest over it."""
    meta["integrity"] = {"algorithm": ALGORITHM, "sha256": digest(meta)}
    (Path(path) / "slimkit.json").write_text(json.dumps(meta))
