"""AdamW with float32 states, and the one AdamW step that every slimkit AdamW runs.

``adamw_update_`` is the math (Loshchilov & Hutter's decoupled weight decay with Adam's bias
correction, in torch.optim.AdamW's order of operations); ``AdamW`` keeps its moments as float32
tensors. ``AdamW8bit`` (adamw8bit.py) only changes where the moments live between steps.

Example:
    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = AdamW(model.parameters(), lr=1e-3)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> optimizer.step()
    >>> state_bytes(optimizer)  # two float32 moments per weight, plus a step counter per tensor
    88
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from slimkit.errors import UserInputError

FP32_STATE_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq"})


def adamw_update_(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int,
    *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
) -> None:
    """One AdamW step on float32 tensors, in place on ``param``, ``exp_avg`` and ``exp_avg_sq``.

    ``step`` counts from 1 (it sets the bias correction).

    Example:
        >>> p, m, v = torch.ones(2), torch.zeros(2), torch.zeros(2)
        >>> adamw_update_(p, torch.tensor([1.0, -1.0]), m, v, 1, lr=0.1, beta1=0.9, beta2=0.999,
        ...               eps=1e-8, weight_decay=0.0)
        >>> p
        tensor([0.9000, 1.1000])
    """
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps in its per-parameter state (moments, codes,
    scales, step counters), each allocation counted once (bitsandbytes shares its code books
    between parameters) and tensor subclasses (torchao's 8-bit states) counted by their parts.
    Works for any torch optimizer.

    Example:
        >>> state_bytes(torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1))
        0
    """
    counted = {
        (tensor.device, tensor.data_ptr(), tensor.nbytes): tensor.nbytes
        for state in optimizer.state.values() for value in state.values() for tensor in _plain_tensors(value)
    }
    return sum(counted.values())


def _plain_tensors(value: object) -> Iterator[Tensor]:
    if not isinstance(value, Tensor):
        return
    if type(value) is not Tensor and hasattr(value, "__tensor_flatten__"):
        for name in value.__tensor_flatten__()[0]:
            yield from _plain_tensors(getattr(value, name))
    else:
        yield value


def local_part(tensor: Tensor) -> Tensor:
    """This rank's part of a DTensor (a parameter or state sharded by FSDP or tensor parallelism); a
    plain tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _where(group_index: int, param_index: int, param: Tensor) -> str:
    return f"parameter {param_index} of param group {group_index} (shape {tuple(param.shape)})"


class AdamW(torch.optim.Optimizer):
    """AdamW with float32 moments; equal to ``torch.optim.AdamW`` (amsgrad and maximize off).

    Parameters in another float dtype (bf16, fp16) are updated in float32 and rounded back.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate, >= 0.
        betas: decay rates of the first and second moment, each in [0, 1).
        eps: added to the root of the second moment, >= 0.
        weight_decay: decoupled weight decay (multiplied by lr), >= 0.

    Example:
        >>> optimizer = AdamW(torch.nn.Linear(4, 2).parameters(), lr=3e-4, weight_decay=0.1)
    """

    def __init__(
        self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1], len(self.param_groups) - 1)

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        where = f"param group {index}"
        if not group["lr"] >= 0:
            raise UserInputError(f"{where}: lr={group['lr']!r} must be >= 0")
        betas = group["betas"]
        if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
            raise UserInputError(f"{where}: betas={betas!r} must be two numbers in [0, 1), e.g. (0.9, 0.999)")
        if not group["eps"] >= 0:
            raise UserInputError(f"{where}: eps={group['eps']!r} must be >= 0")
        if not group["weight_decay"] >= 0:
            raise UserInputError(f"{where}: weight_decay={group['weight_decay']!r} must be >= 0")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient; returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise UserInputError(
                        f"{_where(group_index, param_index, param)} has a sparse gradient; "
                        f"{type(self).__name__} needs dense gradients (e.g. nn.Embedding(sparse=False))"
                    )
                self._update(param, group)
        return loss

    def _update(self, param: Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if not state:
            self._init_state(param, state, group)
        state["step"] += 1
        step, (beta1, beta2) = int(state["step"].item()), group["betas"]
        # flat views; reshape copies only a non-contiguous parameter, written back at the end.
        # A DTensor (FSDP/tensor-parallel shard) is updated through this rank's local part.
        param, grad = local_part(param), local_part(param.grad)
        flat, grad = param.reshape(-1), grad.reshape(-1)
        for span in self._spans(param.numel(), group, state):
            exp_avg, exp_avg_sq = self._read_moments(state, group, span)
            view = flat[span]
            param32 = view.float()  # the view itself when the parameter is float32
            adamw_update_(
                param32, grad[span].float(), exp_avg, exp_avg_sq, step, lr=group["lr"], beta1=beta1,
                beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            )
            if param32 is not view:
                view.copy_(param32)
            self._write_moments(state, group, span, exp_avg, exp_avg_sq)
        if not param.is_contiguous():
            param.copy_(flat.view(param.shape))

    def _spans(self, numel: int, group: dict[str, Any], state: dict[str, Tensor]) -> list[slice]:
        """The slices of the flattened parameter that one step updates one after the other."""
        return [slice(0, numel)]

    def _init_state(self, param: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        # A float32 step tensor, as torch.optim.AdamW keeps it: state dicts stay interchangeable.
        state["step"] = torch.tensor(0.0)
        # contiguous, so that a flat view of a moment lines up with param.reshape(-1); *_like keeps a
        # DTensor parameter's sharding and device (host memory under FSDP's CPU offload), so that
        # torch.distributed.checkpoint can reshard the state
        for moment in ("exp_avg", "exp_avg_sq"):
            state[moment] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.contiguous_format)

    def _read_moments(self, state: dict[str, Tensor], group: dict[str, Any], span: slice) -> tuple[Tensor, Tensor]:
        """The two moments of ``span`` as float32 tensors that the step may update in place."""
        return local_part(state["exp_avg"]).view(-1)[span], local_part(state["exp_avg_sq"]).view(-1)[span]

    def _write_moments(self, state: dict[str, Tensor], group: dict[str, Any], span: slice, exp_avg: Tensor,
                       exp_avg_sq: Tensor) -> None:
        """Store the updated moments of ``span`` (float32 moments were updated in place already)."""

    def _state_layouts(self) -> tuple[frozenset[str], ...]:
        """The key sets a parameter's state may have."""
        return (FP32_STATE_KEYS,)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by ``state_dict()``; the moments keep their stored dtypes."""
        layouts = self._state_layouts()
        for index, state in state_dict["state"].items():
            if frozenset(state) not in layouts:
                raise UserInputError(
                    f"state of parameter {index} has keys {sorted(state)}, which {type(self).__name__} "
                    f"cannot use (expected one of {[sorted(keys) for keys in layouts]}); load the state "
                    "into the optimizer class that saved it"
                )
        super().load_state_dict(state_dict)
        # torch casts floating state to the parameter's dtype (bf16 moments would lose bits); put
        # back the saved tensors as they were: float32 moments, uint8 codes, float32 scales.
        saved_ids = [index for group in state_dict["param_groups"] for index in group["params"]]
        params = [param for group in self.param_groups for param in group["params"]]
        for index, param in zip(saved_ids, params):
            for key, value in state_dict["state"].get(index, {}).items():
                if key != "step":
                    self.state[param][key] = value.to(param.device, copy=True)
