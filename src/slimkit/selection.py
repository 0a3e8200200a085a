"""Which layers a transform touches, by include/exclude name patterns, and why the others are left alone.

Every transform that takes ``include``/``exclude`` (quantization, activation quantization, QAT,
pruning, low-rank factorization, LoRA's ``targets``) chooses its layers here.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.naming import closest_names, parameter_owners


NOT_MATCHED = "not matched by"  # how a skip reason for a layer outside the include patterns starts
TIED_QUANTIZED = "quantizing it would store it twice"  # the ``tied`` reason of every quantizing transform


def select_layers(model: nn.Module, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                  types: tuple[type, ...] = (nn.Linear,), *, action: str, tied: str, include_name: str = "include",
                  leave_out: Callable[[str, nn.Module], str | None] | None = None
                  ) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The (name, module) pairs a transform touches, and {name: reason} for every other candidate.

    Candidates are the modules that are instances of ``types`` (subclasses count: a PrunedLinear
    left by structured pruning, a FusedConv2d left by fusion). Where ``types`` has nn.Linear, every
    transformers ``Conv1D`` (GPT-2) is first swapped in the model for its equivalent ``Conv1DLinear``,
    so transforms see Linear layers only. A candidate is chosen when:

    - its full dotted name matches an ``include`` pattern (``fnmatchcase``, case-sensitive on every
      OS; ``*`` crosses dots, so ``"*.qkv"`` matches ``blocks.0.attn.qkv`` but ``"qkv"`` does not),
      or ``include`` is empty;
    - it matches no ``exclude`` pattern;
    - it is not inside an ``nn.MultiheadAttention`` (which reads ``out_proj.weight`` itself, so a
      replaced or masked out_proj would be ignored);
    - its weight is not tied to another module's parameter (``tied`` says what transforming it
      would do, e.g. "quantizing it would store it twice");
    - ``leave_out(name, module)`` (the transform's own rules) returns no reason.

    An include or exclude pattern that matches no candidate is a typo or a pattern for another
    model: it raises UserInputError naming the pattern and the closest layer names. A model with no
    candidate at all, or whose candidates the rules above all leave out, raises too, naming the kinds of
    layer with weights the model has (``action`` ends that message: "to quantize"). ``include_name`` is
    what the caller's config calls its include patterns (LoRA: "targets").

    >>> chosen, skipped = select_layers(gpt, exclude=("*.attn.*",), action="to quantize",
    ...                                 tied=TIED_QUANTIZED)  # doctest: +SKIP
    >>> skipped["lm_head"]  # doctest: +SKIP
    'weight tied to wte.weight; quantizing it would store it twice'
    """
    if nn.Linear in types:
        linear_like(model)
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    if not candidates:
        raise UserInputError(f"{type(model).__name__} has no {' or '.join(f'nn.{t.__name__}' for t in types)} "
                             f"layer {action}; {_weighted_kinds(model)}")
    kinds = " or ".join(t.__name__ for t in types)
    for kind, patterns in ((include_name, include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatchcase(name, pattern) for name in candidates):
                raise UserInputError(f"{kind} pattern {pattern!r} matches no {kinds} layer; closest names: "
                                     f"{', '.join(closest_names(pattern, candidates))}")
    owners = parameter_owners(model)
    attention = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    chosen, skipped, own_rules = [], {}, {}
    for name, module in candidates.items():
        reason = _reason(name, module, include, exclude, include_name, owners, attention, tied)
        if reason:
            skipped[name] = reason
            continue
        reason = leave_out(name, module) if leave_out else None
        if reason:
            skipped[name] = own_rules[name] = reason
            continue
        chosen.append((name, module))
    if not chosen and not own_rules:
        # the layers the patterns did match say most about why nothing is left
        reasons = sorted(skipped.items(), key=lambda item: item[1].startswith(NOT_MATCHED))[:3]
        raise UserInputError(f"no layer of {type(model).__name__} is left {action}: "
                             f"{'; '.join(f'{n}: {r}' for n, r in reasons)}; {_weighted_kinds(model)}")
    return chosen, skipped


def conv1d_type() -> type | None:
    """transformers' ``Conv1D`` (GPT-2's projections: a Linear with its weight stored (in, out)), if imported.

    Only a model built by transformers can hold one, and transformers is then imported already.
    """
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


class Conv1DLinear(nn.Linear):
    """The nn.Linear that computes what a transformers ``Conv1D`` computed (weight transposed once).

    ``select_layers`` swaps each Conv1D for this before a transform sees it, so every transform
    written for nn.Linear handles GPT-2's projections; the model keeps its class, and an artifact
    records this module like any other swapped one.
    """

    def slimkit_spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> Conv1DLinear:
        return cls(spec["in_features"], spec["out_features"], spec["bias"])


def linear_like(model: nn.Module) -> list[str]:
    """Swap every transformers ``Conv1D`` of ``model`` for its ``Conv1DLinear``, in place; returns their names."""
    conv1d = conv1d_type()
    names = [name for name, m in model.named_modules() if conv1d is not None and isinstance(m, conv1d)]
    for name in names:
        model.set_submodule(name, _as_linear(model.get_submodule(name)))
    return names


@torch.no_grad()
def _as_linear(conv1d: nn.Module) -> Conv1DLinear:
    weight = conv1d.weight  # (in, out): Conv1D computes x @ weight + bias
    linear = Conv1DLinear(weight.shape[0], weight.shape[1], conv1d.bias is not None, device=weight.device,
                          dtype=weight.dtype)
    linear.weight.copy_(weight.t())
    if conv1d.bias is not None:
        linear.bias.copy_(conv1d.bias)
    linear.requires_grad_(weight.requires_grad)
    return linear


def _weighted_kinds(model: nn.Module) -> str:
    """"its layers with weights are Conv1D (12), Embedding (2)": what a user can aim a transform at instead."""
    # a module a transform swapped in describes itself (slimkit_spec): QuantLinear, Int8Linear, LowRankLinear, ...
    compressed = Counter(type(m).__name__ for m in model.modules() if hasattr(m, "slimkit_spec"))
    kinds = Counter(type(m).__name__ for m in model.modules()
                    if isinstance(getattr(m, "weight", None), torch.Tensor) and not hasattr(m, "slimkit_spec"))
    if compressed and not kinds:
        return ("it is compressed already (" + ", ".join(f"{k} ({n})" for k, n in compressed.most_common()) +
                "): start from the float model it was made from")
    if not kinds:
        return "it has no layer with weights"
    return "its layers with weights are " + ", ".join(f"{k} ({n})" for k, n in kinds.most_common())


def _reason(name: str, module: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...], include_name: str,
            owners: dict[int, list[str]], attention: list[str], tied: str) -> str | None:
    if include and not any(fnmatchcase(name, p) for p in include):
        return f"{NOT_MATCHED} {include_name} {list(include)}"
    if any(fnmatchcase(name, p) for p in exclude):
        return f"matched by exclude {list(exclude)}"
    owner = next((a for a in attention if name.startswith(f"{a}." if a else "")), None)
    if owner is not None:
        return f"inside nn.MultiheadAttention {owner!r}, which reads this layer's weight itself"
    shared = [o for o in owners.get(id(getattr(module, "weight", None)), []) if o != f"{name}.weight"]
    if shared:
        return f"weight tied to {', '.join(shared)}; {tied}"
    return None


def as_patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    """A config's include/exclude as a tuple; a lone string is one pattern, not one per character.

    >>> as_patterns("blocks.*"), as_patterns(["fc1", "fc2"])
    (('blocks.*',), ('fc1', 'fc2'))
    """
    return (value,) if isinstance(value, str) else tuple(value)


def check_finite_weight(name: str, weight: torch.Tensor) -> None:
    """Refuse a chosen layer whose weight holds NaN/Inf: no transform can encode or factorize it.

    >>> check_finite_weight("net.3", torch.tensor([[0.0, float("nan")]]))  # doctest: +SKIP
    UserInputError: layer 'net.3': weight has 1 NaN/Inf value(s), first at index (0, 1); ...
    """
    bad = ~torch.isfinite(weight)
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise UserInputError(f"layer {name!r}: weight has {int(bad.sum())} NaN/Inf value(s), first at index "
                             f"{where}; repair the weights or leave the layer out with exclude=[{name!r}]")
