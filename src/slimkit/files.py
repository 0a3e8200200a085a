"""Reading the files slimkit writes (a JSON description, a safetensors file) with one clear error each."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load
from torch import Tensor

from slimkit.errors import ArtifactError
from slimkit.untrusted import parse_json, safetensors_header


def read_description(path: Path, fmt: str, what: str, missing: str) -> dict:
    """The JSON object in ``path`` whose ``"format"`` is ``fmt``; ArtifactError naming the file otherwise.

    ``what`` names the description ("a slimkit artifact description"), ``missing`` what to do when
    the file is absent.

    >>> read_description(Path("gpt-int4/slimkit.json"), "slimkit-artifact", "a slimkit artifact description",
    ...                  "this folder is not a slimkit artifact")["format"]  # doctest: +SKIP
    'slimkit-artifact'
    """
    try:
        meta = parse_json(path.read_bytes(), path)  # bounded: size, nesting, number length
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {missing}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ArtifactError(f"{path}: not {what} (no \"format\": \"{fmt}\")")
    return meta


def read_safetensors(path: Path, missing: str) -> dict[str, Tensor]:
    """The tensors in the safetensors file ``path``; ArtifactError naming the file when it is absent or unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {missing}") from None
    safetensors_header(data, path)  # offsets, dtypes and shapes checked before anything is allocated
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
