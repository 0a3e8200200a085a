"""The dependency graph: which channels of which layers must be removed together.

The model is traced with torch.fx (leaf modules: those the op table knows, ops.py, and the attention
units of units.py) and shapes are propagated on real example inputs. Every Linear / Conv2d output
opens a channel *space*; the spaces flow through the graph as segment lists (space, start, length)
along the channel dimension (spaces.py). A residual add unites two spaces (one group),
concatenation appends segments, split/chunk slices them, BatchNorm and depthwise convolutions
follow their input's channels, and the next Linear/Conv2d consumes them (its input columns go with
them). A space that reaches the model output, a LayerNorm, a reshape that scatters channels or a
grouped convolution is *blocked*: its channels stay. An op the op table does not know, applied to
tracked channels, is an error that names the op, the module and the layers to exclude; once those
layers are excluded, their channels are kept and the op is passed.

A module that torch.fx cannot trace (data-dependent control flow, e.g. GPT's length check) is
split: each child is traced on its own inputs, with its boundaries blocked.

>>> groups, units, notes = dependency_groups(model, (example_input,))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Mapping
from fnmatch import fnmatchcase

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import UserInputError
from slimkit.pruning import ops
from slimkit.pruning.spaces import Layout, Pieces, Segment, Space, Tracked, Use
from slimkit.pruning.units import find_unit, unit_kind


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return ops.module_rule(m) is not None or unit_kind(m) is not None or super().is_leaf_module(m, qualname)


def dependency_groups(model: nn.Module, example_args: tuple, exclude: tuple[str, ...] = ()
                      ) -> tuple[list[Space], list, list[str]]:
    """(groups: the root spaces, blocked ones with their reason; attention units; notes on piecewise
    tracing and on ops passed because the layers feeding them are excluded)."""
    found = _Found(exclude)
    was_training = model.training
    model.eval()  # BatchNorm running statistics must not move while shapes are propagated
    try:
        with torch.no_grad():
            for m in model.modules():  # recognised before tracing: a kind's check may run the module
                unit_kind(m)
            _walk(model, "", _record_inputs(model, example_args), found)
    finally:
        model.train(was_training)
    roots = {id(s.root()): s.root() for s in found.spaces}
    return list(roots.values()), found.units, found.notes


class _Found:
    """What the walk collects: spaces, attention units, notes; and the user's exclude patterns."""

    def __init__(self, exclude: tuple[str, ...]) -> None:
        self.spaces, self.units, self.notes, self.exclude = [], [], [], exclude

    def excluded(self, names: list[str]) -> bool:
        return bool(names) and all(any(fnmatchcase(n, p) for p in self.exclude) for n in names)


def _record_inputs(model: nn.Module, example_args: tuple) -> dict[nn.Module, tuple]:
    """The (args, kwargs) every module received on its first call with ``example_args``."""
    seen: dict[nn.Module, tuple] = {}

    def record(module, args, kwargs):
        seen.setdefault(module, (args, kwargs))

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
    try:
        model(**example_args[0]) if isinstance(example_args[0], Mapping) else model(*example_args)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _placeholders(gm: fx.GraphModule, module: nn.Module, call: tuple) -> list:
    """The traced graph's placeholder values for a call recorded as (args, kwargs)."""
    bound = inspect.signature(module.forward).bind(*call[0], **call[1])
    bound.apply_defaults()
    nodes = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return [bound.arguments.get(n.target.lstrip("*"), n.args[0] if n.args else None) for n in nodes]


def _walk(module: nn.Module, prefix: str, inputs: dict, found: _Found) -> None:
    if unit_kind(module) is not None:
        found.units.append(find_unit(module, prefix))
        found.spaces.extend(found.units[-1].spaces)
        return
    if ops.module_rule(module) is not None or not list(module.children()):
        return
    try:
        gm = fx.GraphModule(module, _Tracer().trace(module))
        if module not in inputs:
            raise RuntimeError("it was not called with tensor inputs")
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the failing node before raising
            ShapeProp(gm).propagate(*_placeholders(gm, module, inputs[module]))
    except Exception as exc:  # torch.fx raises many kinds (TraceError, TypeError, RuntimeError...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        inner = [(n, c) for n, c in module.named_children() if ops.module_rule(c) is None]
        layers = [f"{prefix}.{n}" if prefix else n for n, m in module.named_modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)) and n]
        if not inner and len(layers) > 1:
            if found.excluded(layers):
                found.notes.append(f"{prefix or type(module).__name__}: not traced ({reason[:80]}); its layers "
                                   "are excluded")
                return
            raise UserInputError(f"the dependency graph cannot trace module {prefix or type(module).__name__!r} "
                                 f"({type(module).__name__}): {reason}; leave its layers out with "
                                 f"exclude={tuple(layers)!r}") from None
        found.notes.append(f"{prefix or type(module).__name__}: traced child by child ({reason[:80]})")
        for name, child in inner:
            _walk(child, f"{prefix}.{name}" if prefix else name, inputs, found)
        return
    Propagation(gm, prefix, found).run()


def _flat(args) -> list:
    out = []
    for a in args:
        out += _flat(a) if isinstance(a, (tuple, list)) else [a]
    return out


class Propagation:
    """One pass over a traced graph, carrying a ``Tracked``/``Pieces`` value per node; the op rules
    (ops.py) read and write it through the helpers below."""

    def __init__(self, gm: fx.GraphModule, prefix: str, found: _Found) -> None:
        self.gm, self.prefix, self.found = gm, prefix, found
        self.info: dict[fx.Node, object] = {}

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                for value in self.tracked(node):
                    self.block(value.layout, "reaches the output")
            elif node.op == "call_module":
                self.info[node] = self._module(node, self.gm.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self.info[node] = self._function(node)

    def full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def value(self, arg) -> Tracked | None:
        value = self.info.get(arg) if isinstance(arg, fx.Node) else None
        return value if isinstance(value, Tracked) else None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]

    def tracked(self, node: fx.Node) -> list[Tracked]:
        """Every tracked value among the node's arguments (tuple values count item by item)."""
        found = []
        for a in _flat(list(node.args) + list(node.kwargs.values())):
            value = self.info.get(a) if isinstance(a, fx.Node) else None
            if isinstance(value, Pieces):
                found += [Tracked(value.dim, piece) for piece in value.pieces if piece]
            elif value:
                found.append(value)
        return found

    def new_space(self, size: int, producer: str) -> Layout:
        space = Space(size, producers=[producer])
        self.found.spaces.append(space)
        return [Segment(space, 0, size)]

    def block(self, layout: Layout, reason: str) -> None:
        for space, _, _ in layout:
            if space is not None and space.root().blocked is None:
                space.root().blocked = reason

    def fixed_operand(self, node: fx.Node) -> None:
        for t in self.tracked(node):
            self.block(t.layout, "used as a parameter of another op")
        return None

    def consume(self, x: Tracked, names: list[str], expected: int) -> None:
        """``names`` read the channels of ``x`` as their input features, if they lie along dim ``expected``."""
        if x.dim != expected:
            self.block(x.layout, f"reach {names[0]} along another dimension")
            return
        offset = 0
        for space, start, length in x.layout:
            if space is not None:
                for n in names:
                    space.root().consumers.append(Use(n, offset, start, length))
            offset += length

    def channelwise(self, layout: Layout, name: str) -> None:
        offset = 0
        for space, start, length in layout:
            if space is not None:
                space.root().channelwise.append(Use(name, offset, start, length))
            offset += length

    def refuse(self, node: fx.Node, what: str) -> None:
        """An op the table does not know, on tracked channels: an error naming the layers feeding it,
        unless the user excluded them all (then their channels stay and the op is passed)."""
        stack = node.meta.get("nn_module_stack") or {}
        where = self.full(list(stack)[-1]) if stack else (self.prefix or "the model")
        layouts = [t.layout for t in self.tracked(node)]
        feeding = sorted({p for layout in layouts for space, _, _ in layout if space for p in space.root().producers})
        if not self.found.excluded(feeding):
            raise UserInputError(f"the dependency graph cannot follow op {what!r} in module {where!r} applied to "
                                 f"prunable channels; leave the layers feeding it out with exclude={tuple(feeding)!r}")
        for layout in layouts:
            self.block(layout, f"op {what!r} in {where} (layers excluded)")
        self.found.notes.append(f"{where}: op {what!r} passed, the layers feeding it are excluded")

    def _module(self, node: fx.Node, m: nn.Module):
        name = self.full(node.target)
        tracked = [(a, self.value(a)) for a in self.tensor_args(node) if self.value(a)]
        x = self.value(node.args[0]) if node.args else (tracked[0][1] if tracked else None)
        if unit_kind(m) is not None:
            return self._unit(node, m, name, tracked)
        rule = ops.module_rule(m)
        if rule is not None:
            return rule(self, node, m, name, x)
        if tracked:
            return self.refuse(node, type(m).__name__)
        return None

    def _unit(self, node: fx.Node, m: nn.Module, name: str, tracked: list):
        unit = find_unit(m, name)
        self.found.units.append(unit)
        self.found.spaces.extend(unit.spaces)
        for arg, x in tracked:
            self.consume(x, unit.input_layers, len(ops.shape(arg)) - 1)
        out = ops.shape(node)
        layout = self.new_space(out[-1], unit.output_layer)
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):  # (output, attention weights, ...)
            return Pieces(len(out) - 1, [layout] + [None] * (len(meta) - 1))
        return Tracked(len(out) - 1, layout)

    def _function(self, node: fx.Node):
        op = ops.op_name(node)
        if op == "getitem":
            return self._getitem(node)
        tracked = self.tracked(node)
        if not tracked:
            return None
        rule = ops.FUNCTIONS.get(op)
        if rule is None:
            return self.refuse(node, op)
        return rule(self, node, tracked[0])

    def _getitem(self, node: fx.Node):
        source = self.info.get(node.args[0])
        if isinstance(source, Pieces):
            return source.item(node.args[1])
        if source:
            return self.refuse(node, "indexing")
        return None
