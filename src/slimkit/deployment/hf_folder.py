"""A plain Hugging Face folder: a pruned (or untouched) transformers model that ``from_pretrained``
loads with no slimkit installed.

Structured pruning edits the config where the new widths are uniform (pruning/units.py): head counts
and the feed-forward width. This writer checks that the config really describes every tensor (the
model transformers would build from it has the same names and shapes) and that no layer is one of
slimkit's own modules (quantized, low-rank, LoRA), then writes config.json, the weights as
safetensors and the tokenizer files of the folder the model came from. What the config cannot
express is refused, naming the layer and the change.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimkit import hf
from slimkit.deployment import ExportRefused
from slimkit.pruning.modules import PrunedBatchNorm2d, PrunedConv2d, PrunedLinear

PLAIN = (PrunedLinear, PrunedConv2d, PrunedBatchNorm2d)  # torch's own layers, narrower: the same tensors

_INSTEAD = {  # slimkit module -> what to do instead
    "QuantLinear": "export it with --to compressed-tensors (transformers loads that) or --to gguf",
    "Int8Linear": "export it with --to compressed-tensors or --to onnx",
    "LowRankLinear": "a Hugging Face config has no factorized layers; export it with --to onnx",
    "GGMLLinear": "export it with --to gguf (transformers loads that with gguf_file=)",
    "GGMLEmbedding": "export it with --to gguf (transformers loads that with gguf_file=)",
    "LoRALinear": "train with --lora --merge (or call slimkit.adapters.lora.merge(model)) and export the merged model",
}


def write_hf_folder(model: nn.Module, directory: Path) -> None:
    """config.json, model.safetensors and the tokenizer files, in ``directory``."""
    config = getattr(model, "config", None)
    if not hasattr(model, "save_pretrained") or not hasattr(config, "to_dict"):
        raise ExportRefused(f"a {type(model).__name__} is not a transformers model; a Hugging Face folder "
                            "needs one: export it with --to onnx")
    for name, module in model.named_modules():
        if type(module).__module__.startswith("slimkit.") and not isinstance(module, PLAIN):
            kind = type(module).__name__
            raise ExportRefused(f"layer {name} is slimkit's {kind}, which plain transformers cannot load: "
                                f"{_INSTEAD.get(kind, 'export it with --to onnx')}")
    _check_config_describes(model)
    model.save_pretrained(directory, safe_serialization=True)
    files, _ = hf.provenance(model)
    if files is not None:
        for path in hf.companion_files(files):
            if path.name not in ("config.json", "generation_config.json"):  # save_pretrained wrote the model's own
                (directory / path.name).write_bytes(path.read_bytes())


def _check_config_describes(model: nn.Module) -> None:
    """ExportRefused naming the first tensor whose shape the config would not build (non-uniform widths)."""
    with torch.device("meta"):
        built = type(model)(model.config)
    expected = {name: tuple(t.shape) for name, t in built.state_dict().items()}
    for name, tensor in model.state_dict().items():
        if name in expected and tuple(tensor.shape) != expected[name]:
            raise ExportRefused(f"{name} is {tuple(tensor.shape)} but the config builds {expected[name]}: a Hugging "
                                "Face config holds one width per kind, and cannot say that layers were pruned to "
                                "different widths or (GPT-2) that fewer heads keep their width; prune with one ratio "
                                "for every layer of an architecture whose config can say it, or export with --to onnx")
    missing = sorted(set(expected) - set(model.state_dict()))
    if missing:
        raise ExportRefused(f"the config builds {missing[0]} (and {len(missing) - 1} more) that the model lacks: "
                            "a removed layer the config cannot express; export with --to onnx")
