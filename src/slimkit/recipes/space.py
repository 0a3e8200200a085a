"""The search space of the accuracy-budget search: one option per layer (float, a sparsity, or a weight
bit width), cheap proxies for a choice's quality and bytes, per-layer sensitivity that prunes the
space, and the recipe that applies a choice for real.

A proxy choice is made on a copy of the model: sparsity with ``slimkit.prune`` (magnitude), bit
widths as the quantize/dequantize round trip of ``slimkit.formats`` with the layout the real step
uses (per output channel for convolutions with int8 activations and for int8 weights, else groups of 128 or 64).
Its bytes are the model's fp32 bytes with each chosen layer's weight replaced by what it would
store (the bitmask/CSR of formats.sparse, the packed codes and scales of formats.quantize).

>>> space = layer_space(reference("cnn"))  # doctest: +SKIP
>>> recipe = choice_recipe({"blocks.3.conv2": "int4", "blocks.2.conv2": "sparse75"}, space)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimkit.errors import UserInputError

SPARSITIES = {"sparse50": 0.5, "sparse75": 0.75, "sparse90": 0.9}
BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}
MIN_WEIGHTS = 1024  # smaller layers stay float: too little to save for the trials they cost
GROUPS = (128, 64)  # weight-only group sizes, widest first: the widest dividing every searched layer is used
CALIB = 8  # calibration batches of GPTQ and of static activation ranges


@dataclass(frozen=True)
class LayerSpace:
    """The searchable layers with their options, and how bit widths are applied."""

    layers: dict[str, tuple[str, ...]]  # name -> options, "float" first
    shapes: dict[str, tuple[int, ...]]
    conv: bool  # True: int8 activations with N-bit weights (quantize_activations); False: weight-only
    group: int = 64  # weight-only group size
    method: str = "rtn"  # weight-only rounding: "rtn" (simulated) or "gptq" (run for real on each trial)
    calib: tuple = field(default=(), compare=False, repr=False)  # GPTQ's calibration batches


def layer_space(model: nn.Module, options: tuple[str, ...] = tuple(SPARSITIES) + tuple(BITS), method: str = "rtn",
                calib: tuple = ()) -> LayerSpace:
    """Every Linear/Conv2d of at least MIN_WEIGHTS weights, each with all ``options``.

    A weight shared with another module (a GPT's lm_head tied to its embedding) stays float: the
    techniques leave tied weights alone.
    """
    from slimkit.naming import parameter_owners

    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    owners = parameter_owners(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
              and m.weight.numel() >= MIN_WEIGHTS and (conv or m.weight.shape[1] % GROUPS[-1] == 0)
              and len(owners[id(m.weight)]) == 1}
    if not layers:
        raise UserInputError(f"{type(model).__name__} has no Linear/Conv2d layer of {MIN_WEIGHTS}+ weights to search")
    group = next(g for g in GROUPS if all(conv or m.weight.shape[1] % g == 0 for m in layers.values()))
    return LayerSpace({n: ("float",) + tuple(options) for n in layers},
                      {n: tuple(m.weight.shape) for n, m in layers.items()}, conv, group, method, tuple(calib))


def apply_proxy(model: nn.Module, choice: dict[str, str], space: LayerSpace) -> tuple[nn.Module, int]:
    """(a copy of ``model`` with ``choice`` simulated, its estimated artifact bytes)."""
    from slimkit.formats import quantize
    from slimkit.formats.sparse import encode_sparse
    from slimkit.pruning import PruneConfig, prune, remove_masks

    result = copy.deepcopy(model)
    sparse = {n: SPARSITIES[o] for n, o in choice.items() if o in SPARSITIES}
    if sparse:
        prune(result, PruneConfig(layer_sparsity=sparse, include=tuple(sparse)))
        remove_masks(result)
    saved = 0
    gptq = space.method == "gptq" and not space.conv
    modules = dict(result.named_modules())
    for name, option in choice.items():
        weight = modules[name].weight
        if option in BITS:
            encoded = quantize(weight.detach().reshape(weight.shape[0], -1), option, **_layout(space, option),
                               scale_dtype=torch.float32 if space.conv else torch.float16)
            if not gptq:
                with torch.no_grad():
                    weight.copy_(encoded.dequantize().reshape(weight.shape))
            saved += weight.numel() * 4 - encoded.nbytes()  # GPTQ stores codes and scales of the same size
        elif option in SPARSITIES:
            compact = encode_sparse(weight.detach())
            saved += weight.numel() * 4 - sum(t.nbytes for t in compact[1].values()) if compact else 0
    if gptq:  # error compensation cannot be simulated weight by weight: the real transform, as the recipe runs it
        from slimkit.quantization import quantize as quantize_model

        for option in BITS:
            layers = tuple(sorted(n for n, o in choice.items() if o == option))
            if layers:
                quantize_model(result, _weight_config(option, layers, space), calib=list(space.calib))
    return result, float_bytes(model) - saved


def _weight_config(option: str, layers: tuple[str, ...], space: LayerSpace):
    from slimkit.quantization import WeightQuantConfig

    return WeightQuantConfig(option, group_size=None if option == "int8" else space.group, include=layers,
                             method=space.method, calib_samples=CALIB)


def _layout(space: LayerSpace, option: str) -> dict:
    """The real step's layout: per output channel for int8 activations and for int8 weights, else groups."""
    if space.conv or option == "int8":
        return {"granularity": "channel"}
    return {"granularity": "group", "group_size": space.group}


def float_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors stored raw (what the estimate starts from)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def sensitivity(model: nn.Module, space: LayerSpace, quality, max_drop: float) -> tuple[LayerSpace, dict]:
    """Each layer's options tried alone; those that alone lose more than ``max_drop`` leave the space.

    ``quality(model) -> float`` is the proxy, higher is better. Returns the pruned space and
    {layer: {option: drop}}. Options are tried from mild to harsh; once one fails, harsher ones of the
    same kind (sparser, fewer bits) are dropped untried.
    """
    base = quality(model)
    drops: dict[str, dict[str, float]] = {}
    kept = {}
    for name, options in space.layers.items():
        drops[name], kept[name] = {}, ["float"]
        for family in (SPARSITIES, BITS):
            for option in [o for o in options if o in family]:
                drop = base - quality(apply_proxy(model, {name: option}, space)[0])
                drops[name][option] = drop
                if drop > max_drop:
                    break
                kept[name].append(option)
    return dataclasses.replace(space, layers={n: tuple(o) for n, o in kept.items()}), drops


def choice_recipe(choice: dict[str, str], space: LayerSpace, name: str = "auto", description: str = ""):
    """The Recipe that applies ``choice`` with the real techniques: one prune step (per-layer sparsity),
    then one quantization step per bit width (int8 activations for convolutional models)."""
    from slimkit.pruning import PruneConfig
    from slimkit.quantization import ActivationQuantConfig
    from slimkit.recipes.recipe import Recipe, Step

    steps = []
    sparse = {n: SPARSITIES[o] for n, o in sorted(choice.items()) if o in SPARSITIES}
    if sparse:
        steps.append(Step("prune", PruneConfig(layer_sparsity=sparse, include=tuple(sparse)), "prune"))
    for option, bits in BITS.items():
        layers = tuple(sorted(n for n, o in choice.items() if o == option))
        if not layers:
            continue
        config = (ActivationQuantConfig(mode="static", weight_bits=bits, include=layers, calib_batches=CALIB)
                  if space.conv else _weight_config(option, layers, space))
        steps.append(Step("quantize_activations" if space.conv else "quantize", config, option))
    if not steps:
        raise UserInputError("the chosen configuration leaves every layer float; nothing to write")
    return Recipe(tuple(steps), name, description)


def proxy_quality(task: str):
    """A cheap quality function on data the final evaluation does not use (higher is better).

    digits: accuracy on the validation split (the report uses the test split); pycorpus: minus the
    bits per byte of 64 windows of the test split (the report uses the validation split).
    """
    from slimkit.data import digits, eval_windows, pycorpus
    from slimkit.evaluation.tasks import get_task

    if task == "digits":
        val = digits().val

        @torch.no_grad()
        def accuracy(model: nn.Module) -> float:
            return (model.eval()(val.x).argmax(-1) == val.y).float().mean().item()
        return accuracy
    if task == "pycorpus":
        x, y = eval_windows(pycorpus().test, 128, 64)

        @torch.no_grad()
        def minus_bpb(model: nn.Module) -> float:
            logits = model.eval()(x)
            nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
            return -nats / math.log(2)
        return minus_bpb
    task_obj = get_task(task)  # minilm: its fidelity figures are already cheap
    return lambda model: task_obj.quality(model)[task_obj.metric]
