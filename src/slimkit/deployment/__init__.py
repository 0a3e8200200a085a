"""``slimkit.export``: write a compressed model in the formats serving engines read.

The package is named by noun (deployment) because the top-level verb ``slimkit.export`` would
shadow a package called ``export``, as with quantization/evaluation.

Targets: "compressed-tensors" (a Hugging Face folder that transformers and vLLM load),
"gguf" (one file llama.cpp loads), "onnx" (onnxruntime), "hf" (a plain Hugging Face folder of a pruned
transformers model, which ``from_pretrained`` loads without slimkit). Each writer stores slimkit's own
integer codes and scales where the target has a place for them and refuses, with an
``ExportRefused`` saying what to do instead, what it cannot represent exactly. The folder is
written next to ``directory`` and renamed into place, so a failure leaves nothing partial.

>>> slimkit.export(model, "llama-w4a16", to="compressed-tensors")  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from torch import nn

from slimkit.errors import UserInputError

TARGETS = ("compressed-tensors", "gguf", "onnx", "hf")


class ExportRefused(UserInputError):
    """The model holds something the target format cannot represent exactly."""


def export(model: nn.Module, directory: str | Path, to: str, *, force: bool = False,
           float_layers: str | None = None) -> Path:
    """Write ``model`` to the folder ``directory`` in the format ``to`` and return the folder.

    An existing ``directory`` is replaced only with ``force=True``. ``float_layers="q4_k"`` (GGUF only)
    quantizes the Linear layers still in float to Q4_K at export.
    """
    if float_layers is not None and to != "gguf":
        raise UserInputError(f"float_layers={float_layers!r} applies to --to gguf only")
    if to not in TARGETS:
        raise UserInputError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    directory = Path(directory)
    if directory.exists() and not force:
        raise UserInputError(f"{directory} already exists; choose another --out or pass --force to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _writer(to)(model, staging, **({"float_layers": float_layers} if float_layers else {}))
        if directory.exists():
            shutil.rmtree(directory) if directory.is_dir() else directory.unlink()
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory


def _writer(to: str):
    if to == "compressed-tensors":
        from slimkit.deployment.compressed_tensors import write_compressed_tensors

        return write_compressed_tensors
    if to == "gguf":
        from slimkit.deployment.gguf import write_gguf

        return write_gguf
    if to == "hf":
        from slimkit.deployment.hf_folder import write_hf_folder

        return write_hf_folder
    from slimkit.deployment.onnx import write_onnx

    return write_onnx
