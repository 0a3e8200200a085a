"""The op table of the dependency graph: how each function, method and module moves channels.

A rule gets the propagation (``graph.Propagation``: its values and helpers), the fx node and the
tracked value of the node's first input (or None), and returns the node's value: a ``Tracked``, a
``Pieces``, or None for a tensor with no prunable channels. A new op or layer type is taught once:

>>> register_function(["my_gelu"], passthrough)  # doctest: +SKIP
>>> register_module([MyNorm], block_module)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import prod

from torch import fx, nn

from slimkit.pruning.spaces import Pieces, Segment, Tracked, slice_layout, unite

FUNCTIONS: dict[str, Callable] = {}
MODULES: dict[type, Callable] = {}


def register_function(names: Iterable[str], rule: Callable) -> None:
    """``rule(prop, node, x)`` handles calls of the functions / tensor methods named ``names``."""
    for name in names:
        FUNCTIONS[name] = rule


def register_module(types: Iterable[type], rule: Callable) -> None:
    """``rule(prop, node, module, name, x)`` handles calls of modules of ``types`` (subclasses too);
    such modules are leaves of the trace."""
    for kind in types:
        MODULES[kind] = rule


def module_rule(m: nn.Module) -> Callable | None:
    return next((MODULES[t] for t in type(m).__mro__ if t in MODULES), None)


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", str(node.target))


def shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):  # a tuple of outputs: its first item
        meta = meta[0] if meta else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


# --- functions and tensor methods -------------------------------------------------------------

def passthrough(prop, node: fx.Node, x):
    """Elementwise in the channel dimension: the output carries the input's channels."""
    return prop.value(node.args[0]) or prop.fixed_operand(node)


def no_channels(prop, node: fx.Node, x):
    return None


def merge(prop, node: fx.Node, x, tensors: list | None = None):
    """Elementwise of several tensors: tracked operands along one dimension are united."""
    tensors = prop.tensor_args(node) if tensors is None else tensors
    out, result = shape(node), None
    for a in tensors:
        a_shape, value = shape(a), prop.value(a)
        if value is None:
            if a_shape and result is not None and a_shape[result.dim - len(out) + len(a_shape)] != 1:
                prop.block(result.layout, f"combined with fixed values by {op_name(node)}")
            continue
        dim = value.dim + len(out) - len(a_shape)
        if result is None:
            result = Tracked(dim, value.layout)
            for b in tensors:  # a fixed operand seen before the tracked one
                s = shape(b)
                if prop.value(b) is None and s and len(s) >= len(out) - dim and s[dim - len(out) + len(s)] != 1:
                    prop.block(value.layout, f"combined with fixed values by {op_name(node)}")
        elif dim != result.dim or not unite(result.layout, value.layout):
            prop.block(result.layout + value.layout, f"{op_name(node)} of channels that do not line up")
    return result


def reduce(prop, node: fx.Node, x: Tracked):
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    ndim = len(shape(node.args[0]))
    if dims is None:
        prop.block(x.layout, f"reduced by {op_name(node)}")
        return None
    dims = [d % ndim for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
    if x.dim in dims:
        prop.block(x.layout, f"reduced by {op_name(node)}")
        return None
    keep = node.kwargs.get("keepdim", len(node.args) > 2 and node.args[2])
    return Tracked(x.dim if keep else x.dim - sum(d < x.dim for d in dims), x.layout)


def reshape(prop, node: fx.Node, x: Tracked):
    """The channel dimension survives a reshape that keeps it whole, with the same dimensions before it."""
    before, after = shape(node.args[0]), shape(node)
    leading = prod(before[:x.dim])
    for d in range(len(after)):
        if prod(after[:d]) == leading and after[d] == before[x.dim]:
            return Tracked(d, x.layout)
    prop.block(x.layout, f"scattered by {op_name(node)}")
    return None


def permute(prop, node: fx.Node, x: Tracked):
    ndim = len(shape(node.args[0]))
    args = [a % ndim for a in node.args[1:]] if node.args[1:] else []
    if len(args) == 1 and isinstance(node.args[1], (tuple, list)):
        args = [a % ndim for a in node.args[1]]
    if op_name(node) == "transpose":
        a, b = args
        return Tracked({a: b, b: a}.get(x.dim, x.dim), x.layout)
    return Tracked(args.index(x.dim), x.layout)


def cat(prop, node: fx.Node, x):
    parts = node.args[0]
    dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(shape(node))
    values = [prop.value(p) for p in parts]
    if any(v is not None and v.dim != dim for v in values):
        return merge(prop, node, x, list(parts))
    layout = []
    for p, v in zip(parts, values):
        layout += v.layout if v else [Segment(None, 0, shape(p)[dim])]
    return Tracked(dim, layout)


def split(prop, node: fx.Node, x: Tracked):
    sizes = [tuple(t.shape)[x.dim] for t in node.meta["tensor_meta"]]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if dim % len(shape(node.args[0])) != x.dim:
        return Pieces(x.dim, [x.layout] * len(sizes))
    pieces, start = [], 0
    for size in sizes:
        pieces.append(slice_layout(x.layout, start, size))
        start += size
    return Pieces(x.dim, pieces)


register_function(["relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "dropout", "leaky_relu", "hardswish",
                   "hardsigmoid", "hardtanh", "relu6", "elu", "selu", "celu", "softplus", "softsign", "mish",
                   "contiguous", "clone", "float", "half", "bfloat16", "to", "type_as", "detach", "max_pool2d",
                   "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "abs", "neg",
                   "square", "sqrt", "rsqrt", "exp", "pow"], passthrough)
register_function(["add", "sub", "mul", "truediv", "iadd", "isub", "imul", "add_", "mul_", "sub_", "div", "div_"],
                  merge)
register_function(["mean", "sum", "amax", "amin"], reduce)
register_function(["flatten", "view", "reshape", "squeeze", "unsqueeze"], reshape)
register_function(["permute", "transpose"], permute)
register_function(["cat", "concat"], cat)
register_function(["split", "chunk", "tensor_split"], split)
register_function(["size", "dim", "getattr"], no_channels)  # shape queries


# --- modules -------------------------------------------------------------------------------------

def linear(prop, node: fx.Node, m: nn.Linear, name: str, x):
    if x:
        prop.consume(x, [name], len(shape(node.args[0])) - 1)
    return Tracked(len(shape(node)) - 1, prop.new_space(m.out_features, name))


def conv2d(prop, node: fx.Node, m: nn.Conv2d, name: str, x):
    if m.groups == 1:
        if x:
            prop.consume(x, [name], 1)
        return Tracked(1, prop.new_space(m.out_channels, name))
    if m.groups == m.in_channels == m.out_channels and x:  # depthwise: channel c in -> channel c out
        prop.channelwise(x.layout, name)
        return x
    if x:
        prop.block(x.layout, f"grouped convolution {name} (groups={m.groups})")
    return None


def batchnorm2d(prop, node: fx.Node, m: nn.Module, name: str, x):
    if x and x.dim == 1:
        prop.channelwise(x.layout, name)
        return x
    if x:
        prop.block(x.layout, f"BatchNorm {name} over other dimension")
    return None


def block_module(prop, node: fx.Node, m: nn.Module, name: str, x):
    """Normalises channels together (LayerNorm...): the channels reaching it stay."""
    if x:
        prop.block(x.layout, f"normalised together by {type(m).__name__} {name}")
    return None


def pass_module(prop, node: fx.Node, m: nn.Module, name: str, x):
    return x


def flatten_module(prop, node: fx.Node, m: nn.Module, name: str, x):
    return reshape(prop, node, x) if x else None


register_module([nn.Linear], linear)
register_module([nn.Conv2d], conv2d)
register_module([nn.BatchNorm2d], batchnorm2d)
register_module([nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.BatchNorm1d], block_module)
register_module([nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Hardswish,
                 nn.Hardsigmoid, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Softsign, nn.Mish,
                 nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d], pass_module)
register_module([nn.Flatten], flatten_module)
