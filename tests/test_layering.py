"""The layers of docs/architecture.md as a check: no slimkit module imports one of a higher layer.

Every import counts: top-level, function-local and TYPE_CHECKING ones, absolute and relative. A module
is placed by the longest entry of LAYERS that names it or a package above it; a module no entry names
fails the test until it is given a layer here (and in docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slimkit

SRC = Path(slimkit.__file__).parent

FOUNDATION, FORMATS, TRANSFORMS, TRAINING, MEASURING, ZOO, COMPOSING = range(7)
NAMES = ["foundation", "formats", "transforms", "training", "measuring/saving/wiring", "data/models",
         "composing/command line"]
LAYERS = {
    # small shared modules any layer may use: they import nothing of slimkit but each other
    **{f"slimkit.{m}": FOUNDATION for m in (
        "errors", "naming", "files", "configs", "manifest", "selection", "progress", "timing", "profiling",
        "machine", "losses", "atomic", "untrusted", "description", "classes")},
    "slimkit.formats": FORMATS,
    **{f"slimkit.{m}": TRANSFORMS for m in (
        "quantization", "pruning", "lowrank", "adapters", "calibration",
        "distillation.losses", "distillation.hooks", "distillation.config")},
    # distill() runs slimkit.train with the distillation loss: the package's entry point trains
    **{f"slimkit.{m}": TRAINING for m in ("training", "optim", "privacy", "memory", "distributed", "distillation")},
    # the technique registry wires every transform and the training loop, so it sits above them
    **{f"slimkit.{m}": MEASURING for m in ("evaluation", "io", "hf", "deployment", "registry", "techniques")},
    **{f"slimkit.{m}": ZOO for m in ("data", "models")},
    # the demo, the CLI and recipes run the zoo's tasks (DESIGN.md: data/models are "used by tests,
    # benchmarks and the demo"; nothing in layers 1-3 and not evaluation depends on them)
    **{f"slimkit.{m}": COMPOSING for m in ("recipes", "cli", "demo")},
}

# The one import that goes up, kept until its owner moves it: distributed.consolidate writes the
# consolidated checkpoint as a slimkit artifact (io.save). Either consolidate returns the loaded model
# for the caller to save, or it moves above io; both change the distributed API's shape.
ALLOWED = {("slimkit.distributed.checkpoint", "slimkit.io")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def layer(name: str) -> int | None:
    if name == "slimkit":  # the package namespace imports up to data/models; the CLI may read __version__
        return COMPOSING
    parts = name.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return None


def imported(name: str, path: Path) -> set[str]:
    """The slimkit modules ``name`` imports (a ``from package import name`` counts the submodule if it is one)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m == "slimkit" or m.startswith("slimkit.")}


def test_every_module_has_a_layer():
    assert [name for name in MODULES if layer(name) is None] == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{name} ({NAMES[layer(name)]}) imports {target} ({NAMES[layer(target)]})"
              for name, path in MODULES.items() if layer(name) is not None
              for target in sorted(imported(name, path))
              if (layer(target) or 0) > layer(name) and (name, target) not in ALLOWED]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("from slimkit.training.loop import train", {"slimkit.training.loop"}),
    ("def f():\n    from slimkit import models", {"slimkit.models"}),
    ("from . import masks", {"slimkit.pruning.masks"}),
    ("from ..models import tasks", {"slimkit.models.tasks"}),
    ("import slimkit.data.pycorpus as corpus", {"slimkit.data.pycorpus"}),
])
def test_the_check_sees_every_kind_of_import(tmp_path, source, expected):
    path = tmp_path / "api.py"
    path.write_text(source)
    assert imported("slimkit.pruning.api", path) == expected


def test_the_allowed_upward_imports_still_exist():
    """An entry of ALLOWED whose import is gone is removed, so that the list only ever shrinks."""
    assert {(name, target) for name, target in ALLOWED if target in imported(name, MODULES[name])} == ALLOWED
