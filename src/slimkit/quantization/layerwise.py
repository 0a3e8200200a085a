"""Weight-only quantization of a Hugging Face folder one decoder layer at a time.

For models whose float weights do not fit in memory. The model is built on the meta device (no
float copy); the tensors outside the decoder layers (embeddings, final norm, head) are read from
the safetensors shards, then each decoder layer is read alone in float32, calibrated on the
outputs of the layers before it (already quantized, GPTQ's sequential mode), quantized, and
kept in its packed form, or written to its own shard of the artifact and dropped (``writer=``).
Its float weights are dropped before the next layer is read. Peak memory is one float32 layer
and its calibration statistics, plus the packed model when it is kept. The codes equal those of
``slimkit.quantize`` on the whole model loaded in memory (tested on a small Llama).

>>> model = quantize_folder("llama-folder", WeightQuantConfig("int4", method="gptq"), calib)  # doctest: +SKIP
>>> slimkit.save(model, "llama-int4")  # doctest: +SKIP

A model whose quantized form does not fit in memory either is written layer by layer, one shard each:

>>> with slimkit.io.saving("llama-int4") as writer:  # doctest: +SKIP
...     rest = quantize_folder("llama-folder", WeightQuantConfig("int4"), writer=writer)
...     writer.finish(rest, companions="llama-folder")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.manifest import add_entry, get_manifest, set_manifest
from slimkit.progress import progress
from slimkit.selection import TIED_QUANTIZED, select_layers
from slimkit.quantization.api import quantize
from slimkit.quantization.config import WeightQuantConfig

_FLOAT32 = 4  # bytes


def quantize_folder(folder: str | Path, config: WeightQuantConfig, calib: list[Tensor] | None = None, *,
                    writer: PartWriter | None = None, prepare: Callable[[nn.Module], None] | None = None,
                    available_bytes: Callable[[], int] | None = None) -> nn.Module:
    """The causal LM in ``folder`` with every decoder layer's Linears quantized by ``config``.

    ``calib``: token-id tensors (B, T) for gptq/awq. The embeddings, final norm and head stay
    float. Refuses before reading any weight when one layer's float32 weights and statistics
    exceed the available memory (``available_bytes``, default MemAvailable of /proc/meminfo).
    ``prepare(layer)`` runs on each quantized layer (e.g. ``choose_paths``). With ``writer`` (from
    ``slimkit.io.saving``) each layer is written as its own shard as soon as it is quantized and
    dropped, so the quantized model never sits whole in memory either: the returned model then
    lacks those layers, and ``writer.finish(model, companions=folder)`` completes the artifact.
    """
    model, layers = _layer_by_layer(Path(folder), config, calib, available_bytes)
    for name, layer in layers:
        if prepare is not None:
            prepare(layer)
            _lift_manifest(model, layer, name)
        if writer is not None:
            writer.write_part(name, layer)
            model.set_submodule(name, nn.Module())  # its tensors are on disk: free them now
    return model


class PartWriter(Protocol):
    def write_part(self, name: str, module: nn.Module) -> None: ...


def _layer_by_layer(folder: Path, config: WeightQuantConfig, calib: list[Tensor] | None,
                    available_bytes: Callable[[], int] | None) -> tuple[nn.Module, Iterator[tuple[str, nn.Module]]]:
    """The model (decoder layers still on the meta device) and an iterator that quantizes its layers in
    order, yielding (name, layer) once the layer is quantized and the next layer's inputs are computed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tensors = _tensor_files(folder)
    hf_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config).eval()
    blocks_name, blocks = _decoder_layers(model)
    _check_memory(tensors, blocks_name, len(blocks), calib, (available_bytes or _mem_available)())
    _materialize(model, {k: f for k, f in tensors.items() if not k.startswith(f"{blocks_name}.")},
                 skip=f"{blocks_name}.")
    chosen = _choose(model, blocks_name, config)

    def layers() -> Iterator[tuple[str, nn.Module]]:
        inputs = _first_block_inputs(model, blocks[0], calib) if calib is not None else None
        for i in progress(range(len(blocks)), total=len(blocks), desc=f"layer by layer ({config.method} "
                          f"{config.format})", unit="layer"):
            prefix = f"{blocks_name}.{i}."
            block = blocks[i]
            _materialize(block, {k: f for k, f in tensors.items() if k.startswith(prefix)}, prefix)
            local = tuple(name[len(prefix):] for name in chosen if name.startswith(prefix))
            if local:  # full-name patterns chosen on the whole model, passed to the block as its local names
                quantize(block, replace(config, include=local, exclude=()), calib=inputs)
            _lift_manifest(model, block, prefix[:-1])
            if inputs is not None and i + 1 < len(blocks):
                with torch.no_grad():
                    inputs = [{**batch, "hidden_states": _hidden(block(**batch))} for batch in inputs]
            yield prefix[:-1], block

    return model, layers()


def _lift_manifest(model: nn.Module, block: nn.Module, name: str) -> None:
    """Move ``block``'s manifest entries to ``model``'s, under the block's full name."""
    for entry in get_manifest(block):
        add_entry(model, {**entry, "layer": f"{name}.{entry['layer']}"})
    set_manifest(block, [])


def _choose(model: nn.Module, blocks_name: str, config: WeightQuantConfig) -> list[str]:
    """Names of the Linears to quantize (the model's patterns); the others get their manifest entry."""
    chosen, skipped = select_layers(model, config.include, config.exclude, (nn.Linear,), action="to quantize",
                                    tied=TIED_QUANTIZED)
    outside = [name for name, _ in chosen if not name.startswith(f"{blocks_name}.")]
    skipped.update({name: "outside the decoder layers: stays float in layer-by-layer quantization"
                    for name in outside})
    for name, reason in skipped.items():
        add_entry(model, {"layer": name, "technique": f"weight-only {config.method}", "skipped": reason})
    return [name for name, _ in chosen if name not in outside]


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it (single file or an index of shards)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {name: folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise UserInputError(f"{folder}: no model.safetensors or model.safetensors.index.json; layer-by-layer "
                             "quantization reads safetensors shards")
    with safe_open(single, "pt") as f:
        return {name: single for name in f.keys()}


def _decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            return name, module
    raise UserInputError(f"{type(model).__name__} has no list of decoder layers; layer-by-layer quantization "
                         "handles decoder LLMs (Llama, Qwen, Mistral families)")


def _read(tensors: dict[str, Path], prefix: str) -> dict[str, Tensor]:
    """The named tensors in float32, keyed by their name without ``prefix``."""
    by_file: dict[Path, list[str]] = {}
    for name, file in tensors.items():
        by_file.setdefault(file, []).append(name)
    out = {}
    for file, names in by_file.items():
        with safe_open(file, "pt") as f:
            out.update({name[len(prefix):]: f.get_tensor(name).float() for name in names})
    return out


def _materialize(module: nn.Module, tensors: dict[str, Path], prefix: str = "", skip: str | None = None) -> None:
    """Replace ``module``'s meta tensors (except those under ``skip``) by float32 tensors read from the shards."""
    module.load_state_dict(_read(tensors, prefix), strict=False, assign=True)

    def missing() -> list[str]:
        return [n for n, p in module.named_parameters() if p.is_meta and not (skip and n.startswith(skip))]

    if missing() and hasattr(module, "tie_weights"):
        module.tie_weights()  # a tied head is not stored separately
    if missing():
        raise UserInputError(f"the shards hold no tensor for {', '.join(prefix + n for n in missing()[:3])}")
    owners = {name.rpartition(".")[0] for name, buffer in module.named_buffers()
              if buffer.is_meta and not (skip and name.startswith(skip))}
    for owner_name in owners:  # buffers computed at init (rotary frequencies): rebuild that module on the CPU
        owner = module.get_submodule(owner_name)
        module.set_submodule(owner_name, type(owner)(config=owner.config))


def _first_block_inputs(model: nn.Module, block: nn.Module, calib: list[Tensor]) -> list[dict]:
    """The keyword arguments the first decoder layer receives for each batch (the model stops there)."""
    captured = []

    class Stop(Exception):
        pass

    def hook(_module, args, kwargs):
        captured.append({**kwargs, **({"hidden_states": args[0]} if args else {})})
        raise Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in calib:
            try:
                with torch.no_grad():
                    model(ids, use_cache=False)
            except Stop:
                pass
    finally:
        handle.remove()
    return captured


def _hidden(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _check_memory(tensors: dict[str, Path], blocks_name: str, count: int, calib: list[Tensor] | None,
                  available: int) -> None:
    """Refuse when the largest layer's float32 weights plus its GPTQ statistics exceed ``available``."""
    shapes = {}
    for file in set(tensors.values()):
        with safe_open(file, "pt") as f:
            shapes.update({name: f.get_slice(name).get_shape() for name in f.keys()})
    worst, worst_layer = 0, 0
    for i in range(count):
        prefix = f"{blocks_name}.{i}."
        mats = [s for n, s in shapes.items() if n.startswith(prefix)]
        weights = sum(_numel(s) for s in mats) * _FLOAT32
        widest = max((s[-1] for s in mats if len(s) == 2), default=0)
        # one float64 Hessian (in x in) and its inverse at a time, plus the layer's float32 weights
        need = weights + 2 * widest * widest * 8
        if need > worst:
            worst, worst_layer, parts = need, i, (weights, widest)
    tokens = sum(t.numel() for t in calib) if calib else 1
    hidden = max((s[-1] for s in shapes.values() if len(s) == 2), default=0)
    activations = 3 * tokens * hidden * _FLOAT32  # the layer's inputs, outputs and one intermediate
    if worst + activations > available:
        gib = 2 ** 30
        raise UserInputError(
            f"layer {blocks_name}.{worst_layer} needs about {(worst + activations) / gib:.1f} GiB while it is "
            f"quantized ({parts[0] / gib:.1f} GiB float32 weights, {2 * parts[1] ** 2 * 8 / gib:.1f} GiB "
            f"Hessian, {activations / gib:.1f} GiB calibration activations) but {available / gib:.1f} GiB is "
            "available; free memory or calibrate on fewer tokens")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise UserInputError("cannot read MemAvailable from /proc/meminfo; pass available_bytes")
