"""Reading the files slimkit writes (a JSON description, a safetensors file) with one clear error each."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from slimkit.errors import ArtifactError


def read_description(path: Path, fmt: str, what: str, missing: str) -> dict:
    """The JSON object in ``path`` whose ``"format"`` is ``fmt``; ArtifactError naming the file otherwise.

    ``what`` names the description ("a slimkit artifact description"), ``missing`` what to do when
    the file is absent.

    >>> read_description(Path("gpt-int4/slimkit.json"), "slimkit-artifact", "a slimkit artifact description",
    ...                  "this folder is not a slimkit artifact")["format"]  # doctest: +SKIP
    'slimkit-artifact'
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); the file is corrupt or truncated") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ArtifactError(f"{path}: not {what} (no \"format\": \"{fmt}\")")
    return meta


def read_safetensors(path: Path, missing: str) -> dict[str, Tensor]:
    """The tensors in the safetensors file ``path``; ArtifactError naming the file when it is absent or unreadable."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {missing}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
