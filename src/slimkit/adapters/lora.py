"""LoRA and QLoRA: train low-rank adapters on a frozen (float or NF4) base; merge; save adapters alone.

Used as ``slimkit.lora``:

>>> names = slimkit.lora.inject(gpt, LoRAConfig(rank=8, targets=("blocks.*.attn.qkv",)))  # doctest: +SKIP
>>> slimkit.lora.trainable_parameters(gpt)  # doctest: +SKIP
(8192, 823552)

``inject`` swaps each chosen ``nn.Linear`` for a ``LoRALinear`` (with ``base="nf4"`` its frozen
weight becomes NF4 codes with double-quantized scales: QLoRA) and freezes everything else.
``merge``/``unmerge`` fold the update into float weights and back. ``save_adapters`` writes
only A and B (adapters.safetensors + adapters.json); ``slimkit.save`` saves the whole model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from slimkit.adapters.config import LoRAConfig
from slimkit.adapters.layer import LoRALinear
from slimkit.errors import ArtifactError, UserInputError
from slimkit.files import read_description, read_safetensors
from slimkit.formats import quantize as quantize_tensor
from slimkit.manifest import add_entry
from slimkit.progress import progress
from slimkit.quantization.modules import QuantLinear
from slimkit.selection import select_layers

__all__ = ["LoRAConfig", "LoRALinear", "adapter_layers", "freeze", "inject", "load_adapters", "merge",
           "save_adapters", "trainable_parameters", "unload", "unmerge"]

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_META = "adapters.json"
ADAPTER_FORMAT = "slimkit-lora-adapters"


def inject(model: nn.Module, config: LoRAConfig | None = None) -> list[str]:
    """Give the Linear layers ``config`` chooses adapters, in place; returns their names.

    ``config`` defaults to ``LoRAConfig()`` (rank 8 on every Linear). Every parameter except the
    adapters is frozen. Each layer adapted or skipped (with the reason) gets a manifest entry.

    >>> inject(minilm, LoRAConfig(rank=8, targets=("*.query", "*.value")))[:2]  # doctest: +SKIP
    ['encoder.layer.0.attention.self.query', 'encoder.layer.0.attention.self.value']
    """
    config = config or LoRAConfig()
    existing = list(adapter_layers(model))
    if existing:
        raise UserInputError(f"the model already has LoRA adapters ({len(existing)} layers, e.g. {existing[0]!r}); "
                             "inject into the base model once, or merge them first")
    chosen, skipped = _select(model, config)
    for name, layer in chosen:
        if config.rank > min(layer.in_features, layer.out_features):
            raise UserInputError(f"LoRA rank={config.rank} exceeds min(in, out)={min(layer.in_features, layer.out_features)} "
                                 f"of layer {name!r} ({layer.in_features} -> {layer.out_features}); lower the rank "
                                 "or leave the layer out with exclude")
    technique = "qlora" if config.base == "nf4" else "lora"
    for name, layer in progress(chosen, desc=f"injecting {technique} adapters", unit="layer"):
        base = _nf4_base(layer, config) if config.base == "nf4" else layer
        adapter = LoRALinear(base, config.rank, config.alpha, config.dropout, getattr(torch, config.dtype))
        adapter.reset_adapters(config.init)
        model.set_submodule(name, adapter.train(layer.training))
        entry = {"layer": name, "technique": technique, "rank": config.rank, "alpha": config.alpha,
                 "adapter_dtype": config.dtype}
        if config.base == "nf4":
            entry.update(format="nf4", group_size=config.group_size, double_quant=config.double_quant,
                         bits_per_weight=round(base.encoded().bits_per_element(), 4))
        add_entry(model, entry)
    for name, reason in skipped.items():
        add_entry(model, {"layer": name, "technique": technique, "skipped": reason})
    freeze(model)
    return [name for name, _ in chosen]


def adapter_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRALinear layers by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def freeze(model: nn.Module) -> None:
    """Make the adapters the only trainable parameters."""
    model.requires_grad_(False)
    for layer in adapter_layers(model).values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; an NF4 base weight counts as in * out parameters.

    >>> trainable_parameters(nn.Linear(10, 2))
    (22, 22)
    """
    params = list(model.parameters())  # shared (tied) parameters are listed once
    quantized = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params) + quantized


def merge(model: nn.Module, *, dequantize: bool = False) -> list[str]:
    """Fold every adapter into its base weight (W += scale * B A); returns the merged layers' names.

    An NF4 base cannot take the update without re-quantizing (which would lose it), so it is
    refused unless ``dequantize=True``, which first replaces each NF4 base by a float32 Linear
    holding the dequantized weight (4 bytes per weight again; ``unmerge`` then gives that float base).
    """
    layers = {n: m for n, m in adapter_layers(model).items() if not m.merged}
    quantized = [n for n, m in layers.items() if m.quantized]
    if quantized and not dequantize:
        raise UserInputError(f"{len(quantized)} layer(s) have an NF4 base (e.g. {quantized[0]!r}); merging would "
                             "re-quantize the weight and lose the update. Keep the adapters separate, or pass "
                             "dequantize=True to get float32 base weights with the update merged in")
    for name in quantized:
        layers[name].dequantize_base()
        add_entry(model, {"layer": name, "technique": "qlora merge", "format": "float32",
                          "note": "NF4 base dequantized to float32 so the adapter could be merged"})
    for layer in layers.values():
        layer.merge()
    return list(layers)


def unmerge(model: nn.Module) -> list[str]:
    """Undo ``merge``: subtract each merged update from its base weight; returns the layers' names."""
    layers = {n: m for n, m in adapter_layers(model).items() if m.merged}
    for layer in layers.values():
        layer.unmerge()
    return list(layers)


def unload(model: nn.Module) -> list[str]:
    """Replace every merged LoRALinear by its base Linear (the plain model, e.g. to quantize next).

    >>> merge(gpt); unload(gpt)  # doctest: +SKIP
    """
    layers = adapter_layers(model)
    unmerged = [n for n, m in layers.items() if not m.merged]
    if unmerged:
        raise UserInputError(f"{len(unmerged)} layer(s) are not merged (e.g. {unmerged[0]!r}); unloading them would "
                             "drop their adapters: call merge(model) first")
    for name, layer in layers.items():
        model.set_submodule(name, layer.base)
    return list(layers)


def save_adapters(model: nn.Module, directory: str | Path) -> Path:
    """Write only the adapters: adapters.safetensors (A and B per layer) and adapters.json (settings).

    >>> save_adapters(gpt, "out/gpt-lora")  # doctest: +SKIP
    """
    layers = adapter_layers(model)
    if not layers:
        raise UserInputError("the model has no LoRA adapters to save; call slimkit.lora.inject first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{n}.{ab}.weight": getattr(m, ab).weight.detach().contiguous()
               for n, m in layers.items() for ab in ("lora_A", "lora_B")}
    save_file(tensors, str(directory / ADAPTER_WEIGHTS), metadata={"format": ADAPTER_FORMAT})
    meta = {"format": ADAPTER_FORMAT, "format_version": 1, "config": _config_of(layers).to_dict(),
            "layers": list(layers)}
    (directory / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_adapters(model: nn.Module, directory: str | Path) -> list[str]:
    """Load adapters written by ``save_adapters`` into ``model``; returns the layers' names.

    A model without adapters gets them injected first with the saved settings (so a fresh base
    model plus the adapter folder gives the fine-tuned model). A model with adapters must have
    exactly the saved layers, unmerged.
    """
    directory = Path(directory)
    meta = read_description(directory / ADAPTER_META, ADAPTER_FORMAT, "a LoRA adapter description",
                            "pass the folder that save_adapters wrote")
    saved = meta["layers"]
    if not adapter_layers(model):
        inject(model, replace(LoRAConfig.from_dict(meta["config"]), targets=tuple(saved), exclude=()))
    layers = adapter_layers(model)
    missing, unexpected = [n for n in saved if n not in layers], [n for n in layers if n not in saved]
    if missing or unexpected:
        raise UserInputError(f"{directory}: adapters do not match the model: missing in the model "
                             f"{missing or 'none'}; unexpected in the model {unexpected or 'none'}")
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise UserInputError(f"adapters of {merged[0]!r} are merged into its weight; unmerge(model) before loading")
    tensors = read_safetensors(directory / ADAPTER_WEIGHTS, "the adapter folder is incomplete")
    with torch.no_grad():
        for name in saved:
            for ab in ("lora_A", "lora_B"):
                key, target = f"{name}.{ab}.weight", getattr(layers[name], ab).weight
                if key not in tensors or tensors[key].shape != target.shape:
                    found = tuple(tensors[key].shape) if key in tensors else "nothing"
                    raise ArtifactError(f"{directory / ADAPTER_WEIGHTS}: {key} should be {tuple(target.shape)}, "
                                        f"found {found}")
                target.copy_(tensors[key])
    return saved


def _select(model: nn.Module, config: LoRAConfig) -> tuple[list[tuple[str, nn.Linear]], dict[str, str]]:
    """Linear layers matched by targets and not by exclude, and {name: reason} for the others."""
    chosen, skipped = select_layers(model, config.include, config.exclude, (nn.Linear,), action="for LoRA to adapt",
                                    include_name="targets", tied="merging an adapter would change that too "
                                    "(and an NF4 base would store the weight twice)")
    return chosen, skipped


def _nf4_base(layer: nn.Linear, config: LoRAConfig) -> QuantLinear:
    encoded = quantize_tensor(layer.weight.detach().float(), "nf4", granularity="group", axis=0,
                              group_size=config.group_size, double_quant=config.double_quant)
    return QuantLinear.from_linear(layer, encoded)


def _config_of(layers: dict[str, LoRALinear]) -> LoRAConfig:
    """The settings the adapters were made with (one inject call makes them all alike)."""
    first = next(iter(layers.values()))
    base = {"base": "float"}
    if first.quantized:
        meta = first.base.encoded().meta()
        base = {"base": "nf4", "group_size": meta["group_size"], "double_quant": first.base.encoded().scale_codes is not None}
    return LoRAConfig(rank=first.rank, alpha=first.alpha, dropout=first.dropout_p, targets=tuple(layers),
                      dtype=first.dtype_name, **base)
