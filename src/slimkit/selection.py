"""Which layers a transform touches, by include/exclude name patterns, and why the others are left alone.

Every transform that takes ``include``/``exclude`` (quantization, activation quantization, QAT,
pruning, low-rank factorization, LoRA's ``targets``) chooses its layers here.
"""

from __future__ import annotations

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
    left by structured pruning, a FusedConv2d left by fusion). A candidate is chosen when:

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
    candidate at all raises too (``action`` ends that message: "to quantize"). ``include_name`` is
    what the caller's config calls its include patterns (LoRA: "targets").

    >>> chosen, skipped = select_layers(gpt, exclude=("*.attn.*",), action="to quantize",
    ...                                 tied=TIED_QUANTIZED)  # doctest: +SKIP
    >>> skipped["lm_head"]  # doctest: +SKIP
    'weight tied to wte.weight; quantizing it would store it twice'
    """
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    if not candidates:
        raise UserInputError(f"{type(model).__name__} has no {' or '.join(f'nn.{t.__name__}' for t in types)} "
                             f"layer {action}")
    kinds = " or ".join(t.__name__ for t in types)
    for kind, patterns in ((include_name, include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatchcase(name, pattern) for name in candidates):
                raise UserInputError(f"{kind} pattern {pattern!r} matches no {kinds} layer; closest names: "
                                     f"{', '.join(closest_names(pattern, candidates))}")
    owners = parameter_owners(model)
    attention = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    chosen, skipped = [], {}
    for name, module in candidates.items():
        reason = _reason(name, module, include, exclude, include_name, owners, attention, tied)
        reason = reason or (leave_out(name, module) if leave_out else None)
        if reason:
            skipped[name] = reason
        else:
            chosen.append((name, module))
    return chosen, skipped


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
