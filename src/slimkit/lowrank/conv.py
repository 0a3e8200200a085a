"""Conv2d factorizations: Tucker-2 over the channel modes, and spatial SVD.

- Tucker-2 (Kim et al. 2016): W (C_out, C_in, kh, kw) ~ G x_0 U_out x_1 U_in with U_out
  (C_out, R_out), U_in (C_in, R_in) the leading left singular vectors of W's mode-0 and mode-1
  unfoldings (HOSVD) and the core G = W x_0 U_out^T x_1 U_in^T (R_out, R_in, kh, kw). It runs as a
  1x1 conv C_in -> R_in, the kh x kw core conv R_in -> R_out (the original stride, padding,
  dilation) and a 1x1 conv R_out -> C_out with the bias.
- Spatial SVD (Jaderberg et al. 2014): the truncated SVD of W as a (C_in kh, C_out kw) matrix
  gives a kh x 1 conv C_in -> r then a 1 x kw conv r -> C_out. With kh = kw = 1 this is the plain
  SVD of a 1x1 conv, which is how every 1x1 conv is factorized.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit.lowrank.config import LowRankConfig
from slimkit.lowrank.svd import energy_rank, matrix_rank_rule, split_factors
from slimkit.classes import from_spec_record, spec_record

CONV_PARAMETERS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")


def _pair(value):
    return value if isinstance(value, str) else tuple(value)


class LowRankConv2d(nn.Module):
    """A Conv2d run as a chain of thinner convolutions (``stages``), method "tucker2" or "spatial".

    ``ranks`` is (R_out, R_in) for Tucker-2 and (r,) for spatial SVD.

    >>> conv = LowRankConv2d.from_conv(nn.Conv2d(16, 32, 3, padding=1), "tucker2", (8, 4))
    >>> conv(torch.randn(1, 16, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    """

    def __init__(self, method: str, geometry: dict, ranks: tuple[int, ...], bias: bool = True,
                 dtype: torch.dtype = torch.float32, device=None) -> None:
        super().__init__()
        self.method, self.geometry, self.ranks, self.has_bias = method, dict(geometry), tuple(ranks), bias
        self.dtype_name = str(dtype).removeprefix("torch.")
        c_in, c_out, kernel = geometry["in_channels"], geometry["out_channels"], tuple(geometry["kernel_size"])
        stride, padding, dilation = _pair(geometry["stride"]), _pair(geometry["padding"]), tuple(geometry["dilation"])
        options = {"dtype": dtype, "device": device}
        if method == "tucker2":
            r_out, r_in = ranks
            self.stages = nn.Sequential(
                nn.Conv2d(c_in, r_in, 1, bias=False, **options),
                nn.Conv2d(r_in, r_out, kernel, stride, padding, dilation, bias=False, **options),
                nn.Conv2d(r_out, c_out, 1, bias=bias, **options))
        elif method == "spatial":
            (r,) = ranks
            # a string padding ("same"/"valid") applies to each stage as it stands
            pad_h, pad_w = (padding, padding) if isinstance(padding, str) else ((padding[0], 0), (0, padding[1]))
            self.stages = nn.Sequential(
                nn.Conv2d(c_in, r, (kernel[0], 1), (stride[0], 1), pad_h, (dilation[0], 1), bias=False, **options),
                nn.Conv2d(r, c_out, (1, kernel[1]), (1, stride[1]), pad_w, (1, dilation[1]), bias=bias, **options))
        else:
            raise ValueError(f"unknown conv factorization {method!r}; choose tucker2 or spatial")

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, method: str, ranks: tuple[int, ...]) -> LowRankConv2d:
        """The factorization of ``conv`` at ``ranks`` (see the module docstring for the math)."""
        geometry = {name: getattr(conv, name) for name in CONV_PARAMETERS}
        weight = conv.weight
        layer = cls(method, geometry, ranks, conv.bias is not None, weight.dtype, weight.device)
        stages = layer.stages
        if method == "tucker2":
            u_out, u_in, core = tucker2(weight.detach().double(), ranks)
            stages[0].weight.copy_(u_in.T[:, :, None, None])  # (R_in, C_in, 1, 1)
            stages[1].weight.copy_(core)
            stages[2].weight.copy_(u_out[:, :, None, None])  # (C_out, R_out, 1, 1)
        else:
            first, second = spatial_factors(weight.detach().double(), ranks[0])
            stages[0].weight.copy_(first)
            stages[1].weight.copy_(second)
        if conv.bias is not None:
            stages[-1].bias.copy_(conv.bias)
        return layer.train(conv.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def full_weight(self) -> Tensor:
        """The (C_out, C_in, kh, kw) kernel this chain computes, as one tensor."""
        if self.method == "tucker2":
            first, core, last = (s.weight for s in self.stages)
            return torch.einsum("oa,abhw,bi->oihw", last[:, :, 0, 0], core, first[:, :, 0, 0])
        first, second = (s.weight for s in self.stages)
        return torch.einsum("kih,okw->oihw", first[..., 0], second[:, :, 0])

    def slimkit_spec(self) -> dict:
        """How ``slimkit.load`` rebuilds this layer empty. Stages another transform replaced (an
        Int8Conv2d after static quantization) are recorded with their own specs, and a last stage
        that gained a bias (a BatchNorm folded into it) is rebuilt with one."""
        geometry = {k: v if isinstance(v, (str, int)) else list(v) for k, v in self.geometry.items()}
        stages = {str(i): spec_record(m) for i, m in enumerate(self.stages) if hasattr(m, "slimkit_spec")}
        last = self.stages[-1]
        bias = last.bias is not None if isinstance(last, nn.Conv2d) else self.has_bias
        return {"method": self.method, "geometry": geometry, "ranks": list(self.ranks), "bias": bias,
                "dtype": self.dtype_name, "stages": stages}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> LowRankConv2d:
        """An empty layer of the right shapes; ``load_state_dict`` fills it."""
        layer = cls(spec["method"], spec["geometry"], tuple(spec["ranks"]), spec["bias"], getattr(torch, spec["dtype"]))
        for index, record in spec.get("stages", {}).items():
            layer.stages[int(index)] = from_spec_record(record, f"stages.{index}")
        return layer

    def extra_repr(self) -> str:
        return f"method={self.method}, ranks={self.ranks}"


def unfoldings(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Mode-0 (C_out, C_in kh kw) and mode-1 (C_in, C_out kh kw) unfoldings of a conv kernel."""
    return weight.flatten(1), weight.transpose(0, 1).flatten(1)


def tucker2(weight: Tensor, ranks: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """HOSVD over the two channel modes: (U_out (C_out, R_out), U_in (C_in, R_in), core (R_out, R_in, kh, kw))."""
    r_out, r_in = ranks
    mode0, mode1 = unfoldings(weight)
    u_out = torch.linalg.svd(mode0, full_matrices=False)[0][:, :r_out]
    u_in = torch.linalg.svd(mode1, full_matrices=False)[0][:, :r_in]
    core = torch.einsum("oihw,oa,ib->abhw", weight, u_out, u_in)
    return u_out, u_in, core


def spatial_matrix(weight: Tensor) -> Tensor:
    """W (C_out, C_in, kh, kw) as the (C_in kh, C_out kw) matrix whose SVD separates height from width."""
    c_out, c_in, kh, kw = weight.shape
    return weight.permute(1, 2, 0, 3).reshape(c_in * kh, c_out * kw)


def spatial_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Kernels (r, C_in, kh, 1) and (C_out, r, 1, kw) of the rank-r spatial SVD."""
    c_out, c_in, kh, kw = weight.shape
    u, s, vh = torch.linalg.svd(spatial_matrix(weight), full_matrices=False)
    left, right = split_factors(u, s, vh, rank)  # (C_in kh, r), (r, C_out kw)
    first = left.T.reshape(rank, c_in, kh, 1)
    second = right.reshape(rank, c_out, 1, kw).permute(1, 0, 2, 3)
    return first, second


def tucker2_params(c_out: int, c_in: int, kernel: int, ranks: tuple[int, int]) -> int:
    """Weights of the three Tucker-2 stages (``kernel`` = kh * kw)."""
    r_out, r_in = ranks
    return c_in * r_in + r_in * r_out * kernel + r_out * c_out


def tucker2_ranks(weight: Tensor, config: LowRankConfig) -> tuple[tuple[int, int], tuple[Tensor, Tensor]]:
    """(R_out, R_in) that ``config`` asks for, and the singular values of the two unfoldings.

    rank: the same rank for both modes (capped at each mode's size); energy: per mode; budget:
    ranks in proportion to the channel counts, the largest pair within the budget ((0, 0) if none).
    """
    c_out, c_in = weight.shape[:2]
    values = tuple(torch.linalg.svdvals(m) for m in unfoldings(weight))
    full = (len(values[0]), len(values[1]))
    if config.rank is not None:
        return (min(config.rank, full[0]), min(config.rank, full[1])), values
    if config.energy is not None:
        return (energy_rank(values[0], config.energy), energy_rank(values[1], config.energy)), values
    allowed = config.param_budget * weight.numel()
    kernel = weight[0, 0].numel()
    for r_out in range(full[0], 0, -1):
        ranks = (r_out, max(1, min(full[1], round(r_out * c_in / c_out))))
        if tucker2_params(c_out, c_in, kernel, ranks) <= allowed:
            return ranks, values
    return (0, 0), values


def spatial_rank(weight: Tensor, config: LowRankConfig) -> tuple[int, Tensor]:
    """The spatial-SVD rank ``config`` asks for, and the singular values of the spatial matrix."""
    matrix = spatial_matrix(weight)
    values = torch.linalg.svdvals(matrix)
    return matrix_rank_rule(values, *matrix.shape, config), values
