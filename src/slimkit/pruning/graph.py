"""The dependency graph: which channels of which layers must be removed together.

The model is traced with torch.fx (leaf modules: Linear, Conv2d, norms, activations and the
attention units of units.py) and shapes are propagated on real example inputs. Every Linear /
Conv2d output opens a channel *space*; the spaces flow through the graph as segment lists
(space, start, length) along the channel dimension. A residual add unites two spaces (one group),
concatenation appends segments, split/chunk slices them, BatchNorm and depthwise convolutions
follow their input's channels, and the next Linear/Conv2d consumes them (its input columns go with
them). A space that reaches the model output, a LayerNorm, a reshape that scatters channels or a
grouped convolution is *blocked*: its channels stay. An op the graph does not know, applied to
tracked channels, is an error that names the op and the module.

A module that torch.fx cannot trace (data-dependent control flow, e.g. GPT's length check) is
split: each child is traced on its own inputs, with its boundaries blocked.

>>> groups, units, notes = dependency_groups(model, (example_input,))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import UserInputError
from slimkit.pruning.units import find_unit, is_unit

PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Hardswish, nn.Mish,
                nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d)
BLOCK_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.BatchNorm1d)
LEAVES = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Flatten) + PASS_MODULES + BLOCK_MODULES
PASS_NAMES = {"relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "dropout", "leaky_relu", "hardswish", "mish",
              "relu6", "contiguous", "clone", "float", "half", "bfloat16", "to", "detach", "max_pool2d",
              "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "abs", "neg", "square",
              "sqrt", "exp"}
MERGE_NAMES = {"add", "sub", "mul", "truediv", "iadd", "isub", "imul", "add_", "mul_", "sub_", "div", "div_"}
REDUCE_NAMES = {"mean", "sum", "amax", "amin"}
RESHAPE_NAMES = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
PERMUTE_NAMES = {"permute", "transpose"}


@dataclass
class Space:
    """One Linear/Conv2d output's channels; united spaces form a group (same size, same indices kept)."""

    size: int
    producers: list[str] = field(default_factory=list)  # modules whose output rows are these channels
    channelwise: list[tuple[str, int, int, int]] = field(default_factory=list)  # BatchNorm, depthwise: as consumers
    consumers: list[tuple[str, int, int, int]] = field(default_factory=list)  # (module, input offset, start, length)
    blocked: str | None = None
    parent: Space | None = None

    def root(self) -> Space:
        return self if self.parent is None else self.parent.root()


Layout = list  # [(Space | None, start, length)] along the channel dimension; None: fixed channels


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or is_unit(m) or super().is_leaf_module(m, qualname)


def dependency_groups(model: nn.Module, example_args: tuple) -> tuple[list[Space], list, list[str]]:
    """(groups: the root spaces, blocked ones with their reason; attention units; notes on piecewise tracing)."""
    spaces, units, notes = [], [], []
    was_training = model.training
    model.eval()  # BatchNorm running statistics must not move while shapes are propagated
    try:
        with torch.no_grad():
            _walk(model, "", _record_inputs(model, example_args), spaces, units, notes)
    finally:
        model.train(was_training)
    roots = {id(s.root()): s.root() for s in spaces}
    return list(roots.values()), units, notes


def _record_inputs(model: nn.Module, example_args: tuple) -> dict[nn.Module, tuple]:
    """The positional inputs every module received on its first call with ``example_args``."""
    seen: dict[nn.Module, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.setdefault(mod, args)) for m in model.modules()]
    try:
        model(**example_args[0]) if isinstance(example_args[0], Mapping) else model(*example_args)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _walk(module: nn.Module, prefix: str, inputs: dict, spaces: list, units: list, notes: list) -> None:
    if is_unit(module):
        units.append(find_unit(module, prefix))
        spaces.extend(units[-1].spaces)
        return
    if isinstance(module, LEAVES) or not list(module.children()):
        return
    try:
        gm = fx.GraphModule(module, _Tracer().trace(module))
        if module not in inputs:
            raise RuntimeError("it was not called with positional tensor inputs")
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the failing node before raising
            ShapeProp(gm).propagate(*inputs[module])
    except Exception as exc:  # torch.fx raises many kinds (TraceError, TypeError, RuntimeError...)
        inner = [(n, c) for n, c in module.named_children() if not isinstance(c, LEAVES)]
        layers = [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not inner and len(layers) > 1:
            raise UserInputError(f"the dependency graph cannot trace module {prefix or type(module).__name__!r} "
                                 f"({type(module).__name__}): {str(exc).splitlines()[0]}; leave its layers out "
                                 "with exclude=") from None
        notes.append(f"{prefix or type(module).__name__}: traced child by child ({str(exc).splitlines()[0][:80]})")
        for name, child in inner:
            _walk(child, f"{prefix}.{name}" if prefix else name, inputs, spaces, units, notes)
        return
    _Propagation(gm, prefix, spaces, units).run()


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", str(node.target))


class _Propagation:
    """One pass over a traced graph, carrying (dim, layout) per node."""

    def __init__(self, gm: fx.GraphModule, prefix: str, spaces: list, units: list) -> None:
        self.gm, self.prefix, self.spaces, self.units = gm, prefix, spaces, units
        self.info: dict[fx.Node, object] = {}

    def full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def new_space(self, size: int, producer: str) -> Layout:
        space = Space(size, producers=[producer])
        self.spaces.append(space)
        return [(space, 0, size)]

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                self.info[node] = None
            elif node.op == "output":
                for value in self._tracked(node.args):
                    self._block(value[1], "reaches the output")
            elif node.op == "call_module":
                self.info[node] = self._module(node, self.gm.get_submodule(node.target))
            else:
                self.info[node] = self._function(node)

    def _tracked(self, args) -> list:
        """The (dim, layout) of every tracked tensor among ``args`` (split results count piece by piece)."""
        found = []
        for a in _flat(args):
            value = self.info.get(a) if isinstance(a, fx.Node) else None
            if isinstance(value, tuple) and value[0] == "split":
                found += [(value[1], piece) for piece in value[2]]
            elif value:
                found.append(value)
        return found

    def _block(self, layout: Layout, reason: str) -> None:
        for space, _, _ in layout:
            if space is not None and space.root().blocked is None:
                space.root().blocked = reason

    def _error(self, node: fx.Node, what: str) -> UserInputError:
        stack = node.meta.get("nn_module_stack") or {}
        where = self.full(list(stack)[-1]) if stack else (self.prefix or "the model")
        return UserInputError(f"the dependency graph cannot follow op {what!r} in module {where!r} applied to "
                              "prunable channels; leave the layers feeding it out with exclude=")

    def _module(self, node: fx.Node, m: nn.Module):
        name = self.full(node.target)
        x = self.info.get(node.args[0]) if node.args else None
        out = _shape(node)
        if is_unit(m):
            unit = find_unit(m, name)
            self.units.append(unit)
            self.spaces.extend(unit.spaces)
            if x:
                self._consume(x, unit.input_layers, len(_shape(node.args[0])) - 1)
            return (len(out) - 1, self.new_space(out[-1], unit.output_layer))
        if isinstance(m, nn.Linear):
            if x:
                self._consume(x, [name], len(_shape(node.args[0])) - 1)
            return (len(out) - 1, self.new_space(m.out_features, name))
        if isinstance(m, nn.Conv2d):
            return self._conv(m, name, x)
        if isinstance(m, nn.BatchNorm2d):
            if x and x[0] == 1:
                self._channelwise(x[1], name)
                return x
            if x:
                self._block(x[1], f"BatchNorm {name} over other dimension")
            return None
        if isinstance(m, BLOCK_MODULES):
            if x:
                self._block(x[1], f"normalised together by {type(m).__name__} {name}")
            return None
        if isinstance(m, PASS_MODULES):
            return x
        if isinstance(m, nn.Flatten):
            return self._reshape(node, x) if x else None
        if x or self._tracked(node.args):
            raise self._error(node, type(m).__name__)
        return None

    def _conv(self, m: nn.Conv2d, name: str, x):
        if m.groups == 1:
            if x:
                self._consume(x, [name], 1)
            return (1, self.new_space(m.out_channels, name))
        if m.groups == m.in_channels == m.out_channels and x:  # depthwise: channel c in -> channel c out
            self._channelwise(x[1], name)
            return x
        if x:
            self._block(x[1], f"grouped convolution {name} (groups={m.groups})")
        return None

    def _consume(self, x, names: list[str], expected: int) -> None:
        """``names`` read the channels of ``x`` as their input features, if they lie along dim ``expected``."""
        dim, layout = x
        if dim != expected:
            self._block(layout, f"reach {names[0]} along another dimension")
            return
        offset = 0
        for space, start, length in layout:
            if space is not None:
                for n in names:
                    space.root().consumers.append((n, offset, start, length))
            offset += length

    def _channelwise(self, layout: Layout, name: str) -> None:
        offset = 0
        for space, start, length in layout:
            if space is not None:
                space.root().channelwise.append((name, offset, start, length))
            offset += length

    def _function(self, node: fx.Node):
        op = _op_name(node)
        tensors = [a for a in node.args if isinstance(a, fx.Node)] + \
                  [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
        tracked = [self.info[a] for a in tensors if self.info.get(a)]
        if op == "getitem":
            return self._getitem(node)
        if not tracked and not any(isinstance(self.info.get(a), tuple) for a in _flat(node.args)):
            return None
        if op in PASS_NAMES:
            return tracked[0] if self.info.get(node.args[0]) else self._fixed_operand(tracked)
        if op in MERGE_NAMES:
            return self._merge(node, tensors)
        if op in REDUCE_NAMES:
            return self._reduce(node, tracked[0])
        if op in RESHAPE_NAMES:
            return self._reshape(node, tracked[0])
        if op in PERMUTE_NAMES:
            return self._permute(node, tracked[0])
        if op in ("cat", "concat"):
            return self._cat(node)
        if op in ("split", "chunk", "tensor_split"):
            return self._split(node, tracked[0])
        if op in ("size", "dim", "getattr"):  # shape queries
            return None
        raise self._error(node, op)

    def _fixed_operand(self, tracked):
        for t in tracked:
            self._block(t[1], "used as a parameter of another op")
        return None

    def _merge(self, node: fx.Node, tensors: list) -> object:
        out = _shape(node)
        result = None
        for a in tensors:
            shape, value = _shape(a), self.info.get(a)
            if value is None:
                if shape and len(shape) and result is not None and shape[result[0] - len(out) + len(shape)] != 1:
                    self._block(result[1], f"combined with fixed values by {_op_name(node)}")
                continue
            dim = value[0] + len(out) - len(shape)
            if result is None:
                result = (dim, value[1])
                for b in tensors:  # a fixed operand seen before the tracked one
                    s = _shape(b)
                    if self.info.get(b) is None and s and len(s) >= len(out) - dim and s[dim - len(out) + len(s)] != 1:
                        self._block(value[1], f"combined with fixed values by {_op_name(node)}")
            elif dim != result[0] or not _unite(result[1], value[1]):
                self._block(result[1] + value[1], f"{_op_name(node)} of channels that do not line up")
        return result

    def _reduce(self, node: fx.Node, x) -> object:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        ndim = len(_shape(node.args[0]))
        if dims is None:
            self._block(x[1], f"reduced by {_op_name(node)}")
            return None
        dims = [d % ndim for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
        if x[0] in dims:
            self._block(x[1], f"reduced by {_op_name(node)}")
            return None
        keep = node.kwargs.get("keepdim", len(node.args) > 2 and node.args[2])
        return (x[0] if keep else x[0] - sum(d < x[0] for d in dims), x[1])

    def _reshape(self, node: fx.Node, x) -> object:
        before, after = _shape(node.args[0]), _shape(node)
        prefix = _prod(before[:x[0]])
        for d in range(len(after)):
            if _prod(after[:d]) == prefix and after[d] == before[x[0]]:
                return (d, x[1])
        self._block(x[1], f"scattered by {_op_name(node)}")
        return None

    def _permute(self, node: fx.Node, x) -> object:
        ndim = len(_shape(node.args[0]))
        args = [a % ndim for a in node.args[1:]] if node.args[1:] else []
        if len(args) == 1 and isinstance(node.args[1], (tuple, list)):
            args = [a % ndim for a in node.args[1]]
        if _op_name(node) == "transpose":
            a, b = args
            return ({a: b, b: a}.get(x[0], x[0]), x[1])
        return (args.index(x[0]), x[1])

    def _cat(self, node: fx.Node) -> object:
        parts = node.args[0]
        dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(_shape(node))
        values = [self.info.get(p) for p in parts]
        tracked = [v for v in values if v]
        if any(v[0] != dim for v in tracked):
            return self._merge(node, list(parts))
        layout = []
        for p, v in zip(parts, values):
            layout += v[1] if v else [(None, 0, _shape(p)[dim])]
        return (dim, layout)

    def _split(self, node: fx.Node, x) -> object:
        sizes = [_shape_of(t)[x[0]] for t in node.meta["tensor_meta"]]
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if dim % len(_shape(node.args[0])) != x[0]:
            return ("split", x[0], [x[1]] * len(sizes), True)
        pieces, start = [], 0
        for size in sizes:
            pieces.append(_slice(x[1], start, size))
            start += size
        return ("split", x[0], pieces, False)

    def _getitem(self, node: fx.Node) -> object:
        source = self.info.get(node.args[0])
        if isinstance(source, tuple) and source[0] == "split":
            return (source[1], source[2][node.args[1]])
        if source:
            raise self._error(node, "indexing")
        return None


def _flat(args) -> list:
    out = []
    for a in args:
        out += _flat(a) if isinstance(a, (tuple, list)) else [a]
    return out


def _shape_of(meta) -> tuple:
    return tuple(meta.shape)


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _slice(layout: Layout, start: int, length: int) -> Layout:
    """The segments covering channels [start, start + length) of ``layout``."""
    out, offset = [], 0
    for space, s, n in layout:
        lo, hi = max(start, offset), min(start + length, offset + n)
        if lo < hi:
            out.append((space, s + lo - offset, hi - lo))
        offset += n
    return out


def _unite(a: Layout, b: Layout) -> bool:
    """Unite the spaces of two layouts that line up segment by segment, whole spaces only."""
    if len(a) != len(b):
        return False
    for (sa, sta, na), (sb, stb, nb) in zip(a, b):
        if sa is None or sb is None or na != nb or sta or stb or na != sa.size or nb != sb.size:
            return False
    for (sa, _, _), (sb, _, _) in zip(a, b):
        ra, rb = sa.root(), sb.root()
        if ra is not rb:
            rb.parent = ra
            ra.producers += rb.producers
            ra.channelwise += rb.channelwise
            ra.consumers += rb.consumers
            ra.blocked = ra.blocked or rb.blocked
    return True

