"""Each export read back by the library that serves it, compared with slimkit's own model.

``export_checks`` exports a model to every target, runs what was written with a reader slimkit did
not write (onnxruntime for ONNX; transformers, which decompresses compressed-tensors and dequantizes
GGUF, for the Hugging Face targets) on the same inputs as slimkit's model, and reports per target:
``matched`` with the largest difference relative to the largest output, ``differs``, ``refused`` with
the exporter's reason, or ``no reader`` when the reader is not installed. ``slimkit demo --export``
shows it as a table; ``slimkit export --check`` for one target.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from slimkit.deployment import TARGETS, ExportRefused, export

MATCH = 1e-2  # largest difference / largest output: float rounding and ONNX's per-tensor activations stay under
READER_PACKAGES = {"onnx": ("onnxruntime",), "compressed-tensors": ("transformers", "compressed_tensors"),
                   "gguf": ("transformers", "gguf"), "hf": ("transformers",)}


@dataclass(frozen=True)
class ExportCheck:
    target: str
    status: str  # matched | differs | refused | no reader
    detail: str  # the relative difference, the refusal, or what to install
    bytes: int = 0

    def cell(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status


def export_checks(model: nn.Module, directory: str | Path, targets=TARGETS) -> list[ExportCheck]:
    """Export ``model`` to each of ``targets`` under ``directory``/<target> and check each with its reader."""
    checks = []
    for target in targets:
        out = Path(directory) / target
        try:
            export(model, out, to=target, force=True)
        except ExportRefused as exc:
            checks.append(ExportCheck(target, "refused", str(exc).split(";")[0]))
            continue
        checks.append(check_export(model, out, target))
    return checks


def check_export(model: nn.Module, out: Path, target: str) -> ExportCheck:
    """What ``target``'s reader computes from the folder ``out`` against ``model``, on ``probe_inputs``."""
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    missing = [p for p in READER_PACKAGES[target] if importlib.util.find_spec(p) is None]
    if missing:
        return ExportCheck(target, "no reader", f"pip install {' '.join(missing)}", size)
    inputs = probe_inputs(model)
    with torch.no_grad():
        error = relative_difference(read_back(Path(out), target, inputs), model_output(model, inputs))
    return ExportCheck(target, "matched" if error <= MATCH else "differs", f"{error:.1e}", size)


def checks_table(rows: dict[str, list[ExportCheck]]) -> str:
    """Markdown: one row per model, one column per target, each cell the check's status and detail."""
    targets = [c.target for c in next(iter(rows.values()))]
    lines = ["| model | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    lines += [f"| {name} | " + " | ".join(c.cell().replace("|", "/") for c in checks) + " |"
              for name, checks in rows.items()]
    return "\n".join(lines)


def relative_difference(theirs: Tensor, ours: Tensor) -> float:
    return ((theirs.double() - ours.double()).abs().max() / ours.double().abs().max().clamp_min(1e-30)).item()


def probe_inputs(model: nn.Module) -> dict[str, Tensor]:
    """Seeded inputs of the shape the model takes: token ids for a transformers model, else its
    ``example_input()`` shape (random values for float inputs, random ids below the vocabulary for ids)."""
    generator = torch.Generator().manual_seed(0)
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        ids = torch.randint(0, config.vocab_size, (2, 16), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    example = model.example_input()
    if example.is_floating_point():
        return {"x": torch.randn(example.shape, generator=generator)}
    return {"x": torch.randint(0, config.vocab_size, example.shape, generator=generator)}


def read_back(directory: Path, target: str, inputs: dict[str, Tensor]) -> Tensor:
    """The output of what ``directory`` holds, computed by the target's reader."""
    if target == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0]))
    import transformers

    from slimkit import hf

    # the folder slimkit just wrote, read offline, safetensors only (never a pickle beside it), no remote code
    source = {"gguf_file": "model.gguf"} if target == "gguf" else {"use_safetensors": True}
    name = "LlamaForCausalLM" if target == "gguf" else hf.folder_architecture(directory)
    kind = "encoder" if name == "Model" else hf.kind_of_architecture(name)
    auto = getattr(transformers, hf.AUTO_CLASSES[kind])
    reader = auto.from_pretrained(directory, local_files_only=True, trust_remote_code=False, **source).eval()
    with torch.no_grad():
        return model_output(reader, inputs)


def model_output(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    config = getattr(model, "config", None)
    out = model(**inputs) if hasattr(config, "to_dict") else model(*inputs.values())
    if isinstance(out, Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]
