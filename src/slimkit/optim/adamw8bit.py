"""AdamW with 8-bit block-wise quantized moments (Dettmers et al., "8-bit Optimizers via
Block-wise Quantization", 2022).

Between steps each moment of a large tensor is stored as uint8 codes plus one float32 absmax per
block (slimkit.formats.blockwise): the first moment with a signed code book, the second (never
negative) with an unsigned one. A step decodes both moments to float32, runs the same
``adamw_update_`` as ``AdamW`` and encodes them again, SPAN elements at a time, so its float32
temporaries stay small however large a parameter is. Tensors with fewer than ``min_8bit_size``
elements (biases, norms) keep float32 moments, as bitsandbytes does.

Example:
    >>> model = torch.nn.Linear(256, 64)
    >>> optimizer = AdamW8bit(model.parameters(), lr=1e-3)
    >>> model(torch.randn(8, 256)).square().mean().backward()
    >>> optimizer.step()
    >>> sorted(optimizer.state[model.weight])
    ['exp_avg_absmax', 'exp_avg_codes', 'exp_avg_sq_absmax', 'exp_avg_sq_codes', 'step']
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard

from slimkit.errors import UserInputError
from slimkit.formats.blockwise import (
    CODE_BOOKS,
    CodeBook,
    blockwise_decode,
    blockwise_encode,
    check_block_size,
    code_book,
)
from slimkit.optim import fused_step
from slimkit.optim.adamw import FP32_STATE_KEYS, AdamW, local_part

MOMENTS = ("exp_avg", "exp_avg_sq")
SPAN = 2**20  # elements per piece of a step: a multiple of every block size
SIGNED = {"exp_avg": True, "exp_avg_sq": False}  # the second moment is never negative
QUANTIZED_STATE_KEYS = frozenset({"step"} | {f"{m}_{part}" for m in MOMENTS for part in ("codes", "absmax")})


def adamw8bit_state_bytes(numels: Iterable[int], block_size: int = 256, min_8bit_size: int = 4096) -> int:
    """Bytes of the state AdamW8bit keeps for parameter tensors of these sizes, without building it:
    per tensor of n >= min_8bit_size elements two moments of n codes + 4 * ceil(n / block_size)
    scale bytes, else 8n; plus a 4-byte step each. (For the memory planner.)

    Example:
        >>> adamw8bit_state_bytes([65536, 128])  # 2 * (65536 + 4 * 256) + 8 * 128 + 2 * 4
        134152
    """
    check_block_size(block_size)
    return sum(
        (2 * (n + 4 * -(-n // block_size)) if n >= min_8bit_size else 8 * n) + 4 for n in numels
    )


def _row_shardable(param: DTensor) -> bool:
    """A DTensor whose rows are split (FSDP) or whole: its 8-bit blocks can follow its rows."""
    return param.dim() >= 2 and all(p == Shard(0) or isinstance(p, Replicate) for p in param.placements)


def _absmax_template(param: Tensor, block_size: int) -> Tensor:
    """A tensor shaped (and, for a DTensor, sharded and placed) like the absmax of ``param``: (blocks,) for
    a plain tensor; (rows, blocks per row) for a sharded one, whose blocks run along its rows so that a
    checkpoint reshards to any world size exactly."""
    if not isinstance(param, DTensor):
        return param.detach().reshape(-1)[: -(-param.numel() // block_size)]
    rows = param.detach().reshape(param.shape[0], -1)  # (rows, cols), sharded by rows
    return rows[:, : -(-rows.shape[1] // block_size)]


def _rows_blocked(state: dict[str, Tensor]) -> bool:
    return "exp_avg_absmax" in state and state["exp_avg_absmax"].dim() == 2


class AdamW8bit(AdamW):
    """AdamW whose moments are stored as 8-bit block-wise codes: about 2 bytes per parameter
    instead of 8. Same arguments as ``AdamW``, plus:

    Args:
        block_size: elements per absmax block, 256 or 2048.
        code: code book, ``"dynamic"`` (dynamic tree quantization) or ``"linear"``.
        min_8bit_size: tensors with fewer elements keep float32 moments.

    Example:
        >>> optimizer = AdamW8bit(torch.nn.Linear(4, 2).parameters(), block_size=2048, code="linear")
    """

    def __init__(
        self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 1e-2, *, block_size: int = 256, code: str = "dynamic",
        min_8bit_size: int = 4096,
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, block_size=block_size,
                        code=code, min_8bit_size=min_8bit_size)
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        super()._check_group(group, index)
        where = f"param group {index}"
        try:
            check_block_size(group["block_size"])
        except UserInputError as error:
            raise UserInputError(f"{where}: {error}") from None
        if group["code"] not in CODE_BOOKS:
            raise UserInputError(f"{where}: code={group['code']!r} is unknown; choose one of {', '.join(CODE_BOOKS)}")
        size = group["min_8bit_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UserInputError(f"{where}: min_8bit_size={size!r} must be an integer >= 0")

    def _init_state(self, param: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        if param.numel() < group["min_8bit_size"] or (isinstance(param, DTensor) and not _row_shardable(param)):
            return super()._init_state(param, state, group)
        state["step"] = torch.tensor(0.0)
        block_size = group["block_size"]
        for moment in MOMENTS:
            # what encoding zeros gives, without building a float32 tensor of the parameter's size
            codes, absmax = blockwise_encode(torch.zeros(1), self._book(group, moment), block_size)
            state[f"{moment}_codes"] = torch.full_like(param, int(codes), dtype=torch.uint8,
                                                       memory_format=torch.contiguous_format)
            state[f"{moment}_absmax"] = torch.full_like(_absmax_template(param, block_size), float(absmax),
                                                        dtype=torch.float32, memory_format=torch.contiguous_format)

    def _update(self, param: Tensor, group: dict[str, Any]) -> None:
        """On CUDA one fused kernel (fused_step.py) does what the unfused step's dozen operations do."""
        state = self.state[param]
        if not state:
            self._init_state(param, state, group)
        if not fused_step.applies(param, state):
            return super()._update(param, group)
        beta1, beta2 = group["betas"]
        try:
            fused_step.fused_step(param, state, tuple(self._book(group, m) for m in MOMENTS),
                                  int(state["step"].item()) + 1, block_size=group["block_size"], lr=group["lr"],
                                  beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"])
        except Exception as error:  # noqa: BLE001 - see fused_step.disable: the unfused step is always right
            fused_step.disable(error)
            return super()._update(param, group)
        state["step"] += 1

    def _spans(self, numel: int, group: dict[str, Any], state: dict[str, Tensor]) -> list[slice]:
        if _rows_blocked(state):  # a shard is already 1/world of its parameter: one span
            return [slice(0, numel)]
        # whole blocks at a time, so the step's float32 temporaries stay bounded by SPAN elements
        return [slice(start, min(start + SPAN, numel)) for start in range(0, numel, SPAN)]

    def _read_moments(self, state: dict[str, Tensor], group: dict[str, Any], span: slice) -> tuple[Tensor, Tensor]:
        if "exp_avg" in state:
            return super()._read_moments(state, group, span)
        if _rows_blocked(state):
            return tuple(self._decode_rows(state, group, m).view(-1) for m in MOMENTS)
        blocks = self._blocks(span, group["block_size"])
        exp_avg, exp_avg_sq = (
            blockwise_decode(state[f"{m}_codes"].view(-1)[span], state[f"{m}_absmax"][blocks],
                             self._book(group, m), group["block_size"])
            for m in MOMENTS
        )
        return exp_avg, exp_avg_sq

    def _write_moments(self, state: dict[str, Tensor], group: dict[str, Any], span: slice, exp_avg: Tensor,
                       exp_avg_sq: Tensor) -> None:
        if "exp_avg" in state:
            return
        if _rows_blocked(state):
            for moment, values in zip(MOMENTS, (exp_avg, exp_avg_sq)):
                self._encode_rows(state, group, moment, values)
            return
        blocks = self._blocks(span, group["block_size"])
        for moment, values in zip(MOMENTS, (exp_avg, exp_avg_sq)):
            codes, absmax = blockwise_encode(values, self._book(group, moment), group["block_size"])
            state[f"{moment}_codes"].view(-1)[span].copy_(codes)
            state[f"{moment}_absmax"][blocks].copy_(absmax)

    def _decode_rows(self, state: dict[str, Tensor], group: dict[str, Any], moment: str) -> Tensor:
        codes, absmax = local_part(state[f"{moment}_codes"]), local_part(state[f"{moment}_absmax"])
        rows = codes.reshape(codes.shape[0], -1)  # (rows, cols)
        width = absmax.shape[1] * group["block_size"]
        padded = torch.nn.functional.pad(rows, (0, width - rows.shape[1]))  # (rows, blocks per row * block)
        values = blockwise_decode(padded, absmax.reshape(-1), self._book(group, moment), group["block_size"])
        return values[:, : rows.shape[1]].contiguous()

    def _encode_rows(self, state: dict[str, Tensor], group: dict[str, Any], moment: str, values: Tensor) -> None:
        codes, absmax = local_part(state[f"{moment}_codes"]), local_part(state[f"{moment}_absmax"])
        rows = values.view(codes.shape[0], -1)
        padded = torch.nn.functional.pad(rows, (0, absmax.shape[1] * group["block_size"] - rows.shape[1]))
        new_codes, new_absmax = blockwise_encode(padded, self._book(group, moment), group["block_size"])
        codes.view(codes.shape[0], -1).copy_(new_codes[:, : rows.shape[1]])
        absmax.copy_(new_absmax.view(absmax.shape))

    @staticmethod
    def _blocks(span: slice, block_size: int) -> slice:
        """The absmax blocks of a span that starts on a block boundary."""
        return slice(span.start // block_size, -(-span.stop // block_size))

    @staticmethod
    def _book(group: dict[str, Any], moment: str) -> CodeBook:
        return code_book(group["code"], SIGNED[moment])

    def _state_layouts(self) -> tuple[frozenset[str], ...]:
        return (FP32_STATE_KEYS, QUANTIZED_STATE_KEYS)
