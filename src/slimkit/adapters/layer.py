"""LoRALinear: a frozen base Linear (float, or NF4 codes for QLoRA) plus a trainable low-rank update."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.quantization.modules import QuantLinear


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * B(A(dropout(x))); one forward for a float and an NF4 base.

    ``base`` is a frozen ``nn.Linear`` or ``QuantLinear`` (dequantized on the fly, so gradients
    reach the adapters through it). A is (rank, in), B is (out, rank); B starts at zero, so the
    layer starts equal to its base. After ``merge()`` a float base holds W + scale * B A and the
    forward is the base alone; ``unmerge()`` takes the update out again.

    >>> layer = LoRALinear(nn.Linear(64, 32), rank=4, alpha=8)
    >>> layer(torch.randn(2, 64)).shape
    torch.Size([2, 32])
    """

    def __init__(self, base: nn.Linear | QuantLinear, rank: int, alpha: float, dropout: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        device = next(iter(base.buffers() if isinstance(base, QuantLinear) else base.parameters())).device
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, float(alpha), alpha / rank
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, dtype=dtype, device=device)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, dtype=dtype, device=device)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.merged = False
        self.reset_adapters("default")

    @torch.no_grad()
    def reset_adapters(self, init: str = "default") -> None:
        """A as peft initialises it ("default": kaiming-uniform; "gaussian": normal, std 1/rank), B zero."""
        if init == "gaussian":
            nn.init.normal_(self.lora_A.weight, std=1 / self.rank)
        else:
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        # one compute dtype for base and adapters: autocast's (bfloat16, say) when it is on, else x's
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        rows = x.reshape(-1, self.in_features).to(dtype)  # (N, in)
        if self.quantized and not torch.is_grad_enabled():  # inference: the base's own fastest path
            y = self.base(rows).addmm_(rows @ self.lora_A.weight.to(dtype).t(), self.lora_B.weight.to(dtype).t(),
                                       alpha=self.scale)
            return y.view(*x.shape[:-1], self.out_features)
        if self._watched():  # DP-SGD's per-example gradients watch the adapters: run them as the modules they
            x = x.to(dtype)  # are, on the batch's own shape (per-example hooks need its first dimension)
            return self.base(x).to(dtype) + self.scale * self.lora_B(self.lora_A(self.dropout(x)))
        dropped = None if isinstance(self.dropout, nn.Identity) else self.dropout(rows)
        y = _LoRALinear.apply(rows, dropped, self.lora_A.weight.to(dtype), self.lora_B.weight.to(dtype), self)
        return y.view(*x.shape[:-1], self.out_features)

    def _watched(self) -> bool:
        """Whether per-example gradient machinery looks at the adapters: hooks on them (ghost clipping) or a
        torch.func transform (vmap's per-sample gradients), which the fused autograd node supports neither."""
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (self.lora_A, self.lora_B))
        return hooked or torch._C._are_functorch_transforms_active()

    def base_weight(self, dtype: torch.dtype) -> Tensor:
        """The frozen base weight (out, in) in ``dtype``: a cast, or the NF4 codes dequantized."""
        return self.base.dequantized_weight(dtype) if self.quantized else self.base.weight.to(dtype)

    def delta_weight(self) -> Tensor:
        """scale * B A as a float32 (out, in) matrix: what ``merge`` adds to the base weight."""
        return self.scale * (self.lora_B.weight.float() @ self.lora_A.weight.float())

    @property
    def quantized(self) -> bool:
        return isinstance(self.base, QuantLinear)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into a float base weight (an NF4 base cannot hold it: dequantize first)."""
        if self.quantized:
            raise UserInputError("cannot merge into an NF4 base: it would re-quantize the weight; "
                                 "call dequantize_base() first")
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (exact up to float rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    @torch.no_grad()
    def dequantize_base(self) -> None:
        """Replace an NF4 base by a frozen float32 Linear holding the same dequantized weight."""
        if not self.quantized:
            return
        old = self.base
        linear = nn.Linear(self.in_features, self.out_features, bias=old.bias is not None,
                           device=old.w_codes.device)
        linear.weight.copy_(old.dequantized_weight())
        if old.bias is not None:
            linear.bias.copy_(old.bias)
        self.base = linear.requires_grad_(False).train(old.training)

    def slimkit_spec(self) -> dict:
        """How ``slimkit.load`` rebuilds this layer empty (see ``slimkit.io``)."""
        if self.quantized:
            base = {"kind": "nf4", "spec": self.base.slimkit_spec()}
        else:
            base = {"kind": "float", "bias": self.base.bias is not None,
                    "dtype": str(self.base.weight.dtype).removeprefix("torch.")}
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "alpha": self.alpha, "dropout": self.dropout_p, "dtype": self.dtype_name,
                "merged": self.merged, "base": base}

    @classmethod
    def from_slimkit_spec(cls, spec: dict) -> LoRALinear:
        """An empty layer of the right shapes; ``load_state_dict`` fills it."""
        base_spec = spec["base"]
        if base_spec["kind"] == "nf4":
            base = QuantLinear.from_slimkit_spec(base_spec["spec"])
        else:
            base = nn.Linear(spec["in_features"], spec["out_features"], bias=base_spec["bias"],
                             dtype=getattr(torch, base_spec["dtype"]))
        layer = cls(base, spec["rank"], spec["alpha"], spec["dropout"], getattr(torch, spec["dtype"]))
        layer.merged = spec["merged"]
        return layer

    @property
    def dropout_p(self) -> float:
        return self.dropout.p if isinstance(self.dropout, nn.Dropout) else 0.0

    @property
    def dtype_name(self) -> str:
        return str(self.lora_A.weight.dtype).removeprefix("torch.")

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, base={'nf4' if self.quantized else 'float'}, merged={self.merged}"


class _LoRALinear(torch.autograd.Function):
    """base(x) + scale * (d A^T) B^T in one autograd node, for rows x (N, in), d = dropout(x) (or x),
    A (r, in), B (out, r), all in one compute dtype.

    One node instead of a base Linear, casts and an adapter product: fewer operations per layer (on
    a GPU a LoRA step is bound by launching them), one copy of x kept for backward, and the input
    gradient as one fused product, grad W + (grad B s) A. The rank dimension stays outermost in
    the small products (r, N) x (N, out), which BLAS runs several times faster than (out, N) x (N, r).
    An NF4 base's weight is dequantized again in backward rather than kept: 32 bits per weight is
    what QLoRA's 4-bit storage is meant to avoid; a float base's weight cast is kept, as autocast does.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dropped: Tensor | None, a: Tensor, b: Tensor, layer: LoRALinear) -> Tensor:
        weight = layer.base_weight(x.dtype)
        bias = layer.base.bias
        y = x @ weight.t() if bias is None else torch.addmm(bias.to(x.dtype), x, weight.t())
        h = (x if dropped is None else dropped) @ a.t()  # (N, r)
        y.addmm_(h, b.t(), alpha=layer.scale)
        ctx.save_for_backward(x, dropped, a, b, h, None if layer.quantized else weight)
        ctx.layer = layer
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, dropped, a, b, h, weight = ctx.saved_tensors
        scale = ctx.layer.scale
        if weight is None:
            weight = ctx.layer.base_weight(grad.dtype)
        grad_b = (h.t() @ grad).t().mul_(scale)  # (out, r)
        grad_h = (b.t() @ grad.t()).t().mul_(scale)  # (N, r)
        grad_a = grad_h.t() @ (x if dropped is None else dropped)  # (r, in)
        grad_x = grad_dropped = None
        if dropped is None and ctx.needs_input_grad[0]:
            grad_x = torch.addmm(grad_h @ a, grad, weight)  # (N, in)
        elif dropped is not None:
            grad_x = grad @ weight if ctx.needs_input_grad[0] else None
            grad_dropped = grad_h @ a if ctx.needs_input_grad[1] else None
        return grad_x, grad_dropped, grad_a, grad_b, None
