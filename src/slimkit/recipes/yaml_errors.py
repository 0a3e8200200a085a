"""YAML with line numbers: every value's line is kept by its path, so errors can point at the field.

>>> data, lines = load_yaml("steps:\\n  - prune: {sparsity: 0.9}\\n", "r.yaml")
>>> lines[("steps", 0, "prune", "sparsity")]
2
"""

from __future__ import annotations

import re

import yaml

from slimkit.errors import UserInputError

class RecipeError(UserInputError):
    """A recipe that cannot be read or run as written; the message names the file, line and field."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``; people write ``1e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str, source: str) -> tuple[object, dict[tuple, int]]:
    """The document in ``text`` and {path: 1-based line} of every key and value in it.

    A path is the keys and list indices leading to a value, e.g. ``("steps", 0, "prune")``.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{source}{line}: not valid YAML: {exc.problem or exc}") from None
    if node is None:
        raise RecipeError(f"{source}: the recipe is empty; it needs a 'steps:' list")
    lines: dict[tuple, int] = {}
    _walk(node, (), lines)
    return yaml.load(text, Loader=_Loader), lines


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            _walk(value, child, lines)
            lines[child] = key.start_mark.line + 1  # a field's line is where its key is written
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines)


def error_at(source: str, lines: dict[tuple, int], path: tuple, message: str) -> RecipeError:
    """A RecipeError naming ``source``, the line of ``path`` (or its closest parent) and the field."""
    probe = tuple(path)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = f" line {lines[probe]}" if probe in lines else ""
    field = "".join(f"[{p!r}]" if not isinstance(p, str) or not p.isidentifier() else f".{p}"
                    for p in path).lstrip(".")  # a layer pattern like 'blocks.*' stays quoted
    return RecipeError(f"{source}{line}, {field or 'top level'}: {message}")
