"""The search space of the accuracy-budget search: one option per layer (float, removed channels, a
sparsity, a low-rank budget or a weight bit width), cheap proxies for a choice's quality and bytes,
per-layer sensitivity that prunes the space, and the recipe that applies a choice for real.

A proxy choice is made on a copy of the model: removed channels with ``slimkit.prune`` (structured,
L1), sparsity with ``slimkit.prune`` (magnitude), ranks with ``slimkit.factorize``, bit widths as the
quantize/dequantize round trip of ``slimkit.formats`` with the layout the real step uses (per output
channel for convolutions with int8 activations and for int8 weights, else groups of 128 or 64), or
GPTQ run for real. Its bytes are the fp32 bytes of the reshaped copy with each chosen layer's weight
replaced by what it would store (the bitmask/CSR of formats.sparse, the packed codes and scales of
formats.quantize).

>>> space = layer_space(reference("cnn"))  # doctest: +SKIP
>>> recipe = choice_recipe({"blocks.3.conv2": "int4", "blocks.2.conv1": "channels25"}, space)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.progress import progress

CHANNELS = {"channels25": 0.25, "channels50": 0.5}  # structured: fraction of the layer's output channels removed
SPARSITIES = {"sparse50": 0.5, "sparse75": 0.75, "sparse90": 0.9}
RANKS = {"lowrank50": 0.5, "lowrank25": 0.25}  # low-rank: fraction of the layer's weights its factors keep
BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}
FAMILIES = (CHANNELS, SPARSITIES, RANKS, BITS)  # applied in this order; within one, mild to harsh
OPTIONS = tuple(o for family in FAMILIES for o in family)
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
    embeddings: tuple[str, ...] = ()  # the searched layers that are Embedding tables (weight-only models)


def layer_space(model: nn.Module, options: tuple[str, ...] = OPTIONS, method: str = "rtn", calib: tuple = (),
                include: tuple[str, ...] = (), task: str | None = None) -> LayerSpace:
    """Every Linear/Conv2d (weight-only models: Linear/Embedding) of at least MIN_WEIGHTS weights (matching
    an ``include`` fnmatch pattern, if given), each with the ``options`` that apply to it.

    A weight shared with another module (a GPT's lm_head tied to its embedding) stays float: the
    techniques leave tied weights alone. Channel options go to a layer that alone produces a group of
    coupled channels (a block's inner convolution, an MLP's hidden layer: see pruning/graph.py); in a
    weight-only model only where the channels left still divide into the quantization groups. Rank
    options go to Linear layers; an Embedding table (quantized by RTN in the real step) gets bit widths.
    """
    from slimkit.selection import select_layers

    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    kinds = (nn.Linear, nn.Conv2d) if conv else (nn.Linear, nn.Embedding)  # int8 activations take no tables

    def too_small(_name: str, module: nn.Module) -> str | None:
        if module.weight.numel() < MIN_WEIGHTS or not (conv or module.weight.shape[1] % GROUPS[-1] == 0):
            return f"fewer than {MIN_WEIGHTS} weights or inputs not in groups of {GROUPS[-1]}"
        return None

    chosen, _ = select_layers(model, include, (), kinds, action="to search",
                              tied="the techniques leave tied weights alone", leave_out=too_small)
    layers = dict(chosen)
    if not layers:
        where = f" matching {list(include)}" if include else ""
        raise UserInputError(f"{type(model).__name__} has no Linear/Conv2d layer of {MIN_WEIGHTS}+ weights{where} to "
                             "search")
    group = next(g for g in GROUPS if all(conv or m.weight.shape[1] % g == 0 for m in layers.values()))
    channels = _channel_sizes(model, task) if any(o in CHANNELS for o in options) else {}

    def applies(name: str, option: str) -> bool:
        if isinstance(layers[name], nn.Embedding):
            return option in BITS
        if option in RANKS:
            # ranks on convolutions are not offered: the search was measured with Linear ranks only (a
            # factorized convolution with int8 activations saves and reloads since lowrank/conv.py records
            # the folded bias and the replaced stages)
            return not isinstance(layers[name], nn.Conv2d)
        if option not in CHANNELS:
            return True
        size = channels.get(name)
        return size is not None and (conv or (size - round(CHANNELS[option] * size)) % group == 0)

    return LayerSpace({n: ("float",) + tuple(o for o in options if applies(n, o)) for n in layers},
                      {n: tuple(m.weight.shape) for n, m in layers.items()}, conv, group, method, tuple(calib),
                      tuple(n for n, m in layers.items() if isinstance(m, nn.Embedding)))


def _channel_sizes(model: nn.Module, task: str | None) -> dict[str, int]:
    """{layer: channels} of the layers that alone produce a prunable channel group (attention heads left out),
    traced on one example of ``task`` (by default the task the model's type implies)."""
    from slimkit.models.tasks import get_task, infer_task
    from slimkit.pruning.graph import dependency_groups

    try:
        example = get_task(task or infer_task(model)).calibration(1)[0]
    except UserInputError:
        return {}  # a model no task knows: no example input to trace, so no channel options
    groups = dependency_groups(model, (example,))[0]
    return {g.producers[0]: g.size for g in groups if len(g.producers) == 1 and not g.blocked}


def apply_proxy(model: nn.Module, choice: dict[str, str], space: LayerSpace) -> tuple[nn.Module, int]:
    """(a copy of ``model`` with ``choice`` simulated, its estimated artifact bytes)."""
    from slimkit.formats import quantize
    from slimkit.formats.sparse import encode_sparse
    from slimkit.pruning import remove_masks
    from slimkit.recipes.steps import apply_step

    result = copy.deepcopy(model)
    for step in _structure_steps(choice):  # the real techniques: they reshape the model (no data needed)
        apply_step(result, step, task=None, calib=None)
    remove_masks(result)
    stored = float_bytes(result)  # reshaped, before GPTQ swaps in its packed layers
    saved = 0
    gptq = space.method == "gptq" and not space.conv
    modules = dict(result.named_modules())
    for name, option in choice.items():
        weight = modules[name].weight if option in BITS or option in SPARSITIES else None
        if option in BITS:
            encoded = quantize(weight.detach().reshape(weight.shape[0], -1), option,
                               granularity=_granularity(space, option),
                               scale_dtype=torch.float32 if space.conv else torch.float16)
            if not gptq:
                with torch.no_grad():
                    weight.copy_(encoded.dequantize().reshape(weight.shape))
            saved += weight.numel() * 4 - encoded.nbytes()  # GPTQ stores codes and scales of the same size
        elif option in SPARSITIES:
            compact = encode_sparse(weight.detach())
            saved += weight.numel() * 4 - sum(t.nbytes for t in compact[1].values()) if compact else 0
    if gptq:  # error compensation cannot be simulated weight by weight: the real transform, as the recipe runs it
        from slimkit import registry

        inputs = registry.Inputs(calib=registry.Batches(space.calib), paths=None)
        for option in BITS:
            layers = tuple(sorted(n for n, o in choice.items() if o == option))
            if layers:
                registry.apply(result, "quantize", _weight_config(option, layers, space), inputs)
    return result, stored - saved


def _structure_steps(choice: dict[str, str]) -> list:
    """The recipe steps of the channel, sparsity and rank choices, in FAMILIES order."""
    from slimkit.lowrank import LowRankConfig
    from slimkit.pruning import PruneConfig
    from slimkit.recipes.recipe import Step

    steps = []
    for option, ratio in CHANNELS.items():
        layers = tuple(sorted(n for n, o in choice.items() if o == option))
        if layers:
            steps.append(Step("prune", PruneConfig(structured=True, ratio=ratio, include=layers), option))
    sparse = {n: SPARSITIES[o] for n, o in sorted(choice.items()) if o in SPARSITIES}
    if sparse:
        steps.append(Step("prune", PruneConfig(layer_sparsity=sparse, include=tuple(sparse)), "prune"))
    for option, budget in RANKS.items():
        layers = tuple(sorted(n for n, o in choice.items() if o == option))
        if layers:
            steps.append(Step("factorize", LowRankConfig(param_budget=budget, include=layers), option))
    return steps


def _weight_config(option: str, layers: tuple[str, ...], space: LayerSpace):
    from slimkit.quantization import WeightQuantConfig

    return WeightQuantConfig(option, granularity=_granularity(space, option), include=layers,
                             method=space.method, calibration_batches=CALIB,
                             embeddings=any(n in space.embeddings for n in layers))


def _granularity(space: LayerSpace, option: str):
    """The real step's layout: per output channel for int8 activations and for int8 weights, else groups."""
    from slimkit.formats import PerChannel, PerGroup

    return PerChannel() if space.conv or option == "int8" else PerGroup(space.group)


def float_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors stored raw, a tied tensor once (what the estimate starts from)."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def sensitivity(model: nn.Module, space: LayerSpace, measure, max_drop: float) -> tuple[LayerSpace, dict]:
    """Each layer's options tried alone; those that alone lose more than ``max_drop`` leave the space.

    ``measure(model) -> (quality, distortion)`` is the proxy (proxy_quality). Returns the pruned space
    and {"drop"|"distortion"|"bytes": {layer: {option: value}}} of each option alone ("bytes" also has
    "float": the model's). Options are tried from mild to harsh within each family; once one fails,
    harsher ones of the same family (more channels removed, sparser, lower rank, fewer bits) are
    dropped untried.
    """
    base = measure(model)[0]
    found: dict[str, dict] = {"drop": {}, "distortion": {}, "bytes": {}}
    kept, model_bytes = {}, float_bytes(model)
    for name, options in progress(space.layers.items(), total=len(space.layers), unit="layer",
                                  desc="sensitivity (each layer's options alone)"):
        drops, distortions, sizes = {}, {}, {"float": model_bytes}
        kept[name] = ["float"]
        for family in FAMILIES:
            for option in [o for o in options if o in family]:
                candidate, sizes[option] = apply_proxy(model, {name: option}, space)
                value, distortions[option] = measure(candidate)
                drops[option] = base - value
                if drops[option] > max_drop:
                    break
                kept[name].append(option)
        found["drop"][name], found["distortion"][name], found["bytes"][name] = drops, distortions, sizes
    return dataclasses.replace(space, layers={n: tuple(o) for n, o in kept.items()}), found


def choice_recipe(choice: dict[str, str], space: LayerSpace, name: str = "auto", description: str = ""):
    """The Recipe that applies ``choice`` with the real techniques: structured pruning (one step per ratio),
    unstructured pruning (per-layer sparsity), factorization (one step per budget), then one quantization
    step per bit width (int8 activations for convolutional models)."""
    from slimkit.quantization import ActivationQuantConfig
    from slimkit.recipes.recipe import Recipe, Step

    steps = _structure_steps(choice)
    for option, bits in BITS.items():
        layers = tuple(sorted(n for n, o in choice.items() if o == option))
        if not layers:
            continue
        config = (ActivationQuantConfig(mode="static", weight_bits=bits, include=layers, calibration_batches=CALIB)
                  if space.conv else _weight_config(option, layers, space))
        steps.append(Step("quantize_activations" if space.conv else "quantize", config, option))
    if not steps:
        raise UserInputError("the chosen configuration leaves every layer float; nothing to write")
    return Recipe(tuple(steps), name, description)


PROXY_WINDOWS = 4  # a causal LM's proxy windows (of its task's block length): each candidate runs them once


def proxy_quality(task: str, model: nn.Module):
    """``measure(candidate) -> (quality, distortion)`` on data the final evaluation does not use.

    quality is higher-is-better: digits accuracy on the validation split (the report uses the test
    split); minus the bits per byte of 64 windows of the pycorpus test split (the report uses the
    validation split); a causal LM's task (smollm2): minus the perplexity on ``PROXY_WINDOWS``
    windows of its calibration text (the report uses the validation topics); minilm: the mean cosine of sentence embeddings to ``model``'s (the fp32
    original) on 64 comment lines of the pycorpus training split that calibration leaves out (the
    report uses the 400 docstring sentences). distortion is how far the candidate's outputs moved from
    ``model``'s, finer than a quality drop (an accuracy moves in steps of one example): the mean KL
    divergence of the predicted distributions, or 1 - cosine for embeddings.
    """
    from slimkit.data import digits, embed, eval_windows, pycorpus
    from slimkit.models.tasks import calibration_sentences, get_task

    if task in ("digits", "pycorpus"):
        if task == "digits":
            val = digits().val
            x, y = val.x, val.y
        else:
            x, y = eval_windows(pycorpus().test, 128, 64)
        reference = _log_probs(model, x)

        def measure(candidate: nn.Module) -> tuple[float, float]:
            log_probs = _log_probs(candidate, x)
            kl = torch.nn.functional.kl_div(log_probs, reference, log_target=True, reduction="none").sum(-1)
            if task == "digits":
                return (log_probs.argmax(-1) == y).float().mean().item(), kl.mean().item()
            nats = -log_probs.gather(-1, y.unsqueeze(-1)).mean().item()
            return -nats / math.log(2), kl.mean().item()
        return measure
    task_obj = get_task(task)
    if hasattr(task_obj, "held_out_windows"):  # a causal LM (smollm2): minus the perplexity, KL per token
        x = task_obj.held_out_windows(PROXY_WINDOWS)
        reference = _log_probs(model, x)[:, :-1]

        def next_token(candidate: nn.Module) -> tuple[float, float]:
            log_probs = _log_probs(candidate, x)[:, :-1]
            kl = torch.nn.functional.kl_div(log_probs, reference, log_target=True, reduction="none").sum(-1)
            nats = -log_probs.gather(-1, x[:, 1:].unsqueeze(-1)).mean().item()
            # the perplexity itself, so that a relative --max-drop means the same here as on the report's
            # perplexity (a relative drop of the log would allow about 3x more)
            return -math.exp(nats), kl.mean().item()
        return next_token
    texts = calibration_sentences(16 * CALIB + 64)[16 * CALIB:]  # minilm; calibration takes the first 16 * CALIB
    reference = embed(model, task_obj.tokenizer, texts)

    def cosine(candidate: nn.Module) -> tuple[float, float]:
        value = (embed(candidate, task_obj.tokenizer, texts) * reference).sum(-1).mean().item()
        return value, 1 - value
    return cosine


@torch.no_grad()
def _log_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model.eval()(x)
    return torch.log_softmax(getattr(out, "logits", out).float(), dim=-1)  # (..., classes)
