"""Which layers a transform touches, and why the others are skipped."""

from __future__ import annotations

from fnmatch import fnmatch

from torch import nn

from slimkit.naming import parameter_owners


def select_layers(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...],
                  types: tuple[type, ...] = (nn.Linear,)) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """Modules of ``types`` matching ``include`` (all when empty) and not ``exclude``.

    Returns the chosen (name, module) pairs and {name: reason} for every module of ``types``
    left out. A layer whose weight is tied to another module's parameter is left out: replacing
    it would store that weight twice.
    """
    owners = parameter_owners(model)
    chosen, skipped = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, types):
            continue
        if include and not any(fnmatch(name, p) for p in include):
            skipped[name] = f"not matched by include {list(include)}"
        elif any(fnmatch(name, p) for p in exclude):
            skipped[name] = f"matched by exclude {list(exclude)}"
        elif len(owners.get(id(module.weight), [])) > 1:
            others = [o for o in owners[id(module.weight)] if not o.startswith(f"{name}.")]
            skipped[name] = f"weight tied to {', '.join(others)}; quantizing it would store it twice"
        else:
            chosen.append((name, module))
    return chosen, skipped
