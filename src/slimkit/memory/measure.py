"""Measured peak memory of training steps of ``slimkit.train``'s own step, to set beside the planner's prediction.

CUDA: ``torch.cuda.max_memory_allocated``. CPU has no allocator statistics, so the step runs under
torch's profiler with ``profile_memory=True``: it records every allocation and free the CPU
allocator sees (tensors, and also the short-lived workspaces kernels allocate inside an op, which a
TorchDispatchMode or weakref-tracked storages would miss because they only see op outputs). The
running sum of those events, started from the bytes already live (weights, optimizer states,
the batch), gives the peak; the training loop's ``record_function`` spans around forward, backward
and the optimizer step say in which phase it happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.memory.setup import TrainSetup
from slimkit.profiling import cpu_allocation_events, cuda_peak_bytes

PHASES = ("forward", "backward", "optimizer")


@dataclass(frozen=True)
class Measurement:
    """Peak bytes of live tensors during the measured steps, the phase it fell in, the peak of
    each phase, and the bytes already live before a step (weights, optimizer states, batch)."""

    peak: int
    phase: str
    phases: dict[str, int]
    resident: int
    device: str


def measure(model: nn.Module, setup: TrainSetup, steps: int = 3, seed: int = 0) -> Measurement:
    """Prepare ``model`` as ``setup`` says (precision, checkpointing, LoRA, optimizer), run ``steps``
    steps of the training loop's ``train_step`` (autocast, loss scaling and clipping as ``slimkit.train``
    runs them) on random tokens of the model's vocabulary, and return the peak of the last ``steps - 1``
    (the first step allocates the optimizer states and is a warm-up). Dense layers allocate the same
    bytes whatever the token values, so no data set is needed.

    >>> measure(GPT(GPTConfig()), TrainSetup(batch=8, seq=128)).peak  # doctest: +SKIP
    43516928
    """
    from slimkit.memory.prepare import prepare
    from slimkit.memory.shapes import from_module

    if steps < 2:
        raise UserInputError(f"steps={steps}: measuring needs at least 2 steps (the first is a warm-up)")
    device = next(model.parameters()).device
    vocab = from_module(model).vocab
    model, optimizer, precision = prepare(model, setup)
    step = _loop_step(model, optimizer, precision, device)
    generator = torch.Generator().manual_seed(seed)
    steps_batches = [[tuple(torch.randint(vocab, (setup.batch, setup.seq), generator=generator).to(device)
                            for _ in "xy") for _ in range(setup.accumulate)] for _ in range(steps)]
    model.train()
    step(steps_batches[0])
    phases: dict[str, int] = {}
    for batches in steps_batches[1:]:
        # the step starts by dropping the gradients; dropping them first keeps them out of ``resident``
        optimizer.zero_grad(set_to_none=True)
        resident = live_bytes(model, optimizer, *[t for batch in batches for t in batch])
        for name, peak in _phase_peaks(lambda: step(batches), device).items():
            phases[name] = max(phases.get(name, 0), resident + peak)
    phase = max(phases, key=phases.get)
    return Measurement(peak=phases[phase], phase=phase, phases=phases, resident=resident, device=device.type)


def _loop_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: str, device: torch.device):
    """One optimizer step of ``slimkit.train`` over a list of micro-batches, with the default loss."""
    from slimkit.losses import cross_entropy_loss
    from slimkit.training import TrainConfig
    from slimkit.training.loop import TrainState, train_step
    from slimkit.training.precision import Precision

    loop_precision = Precision.create(precision, device)
    state = TrainState(model, optimizer, TrainConfig(precision=precision))

    def step(batches: list) -> None:
        with loop_precision.matmul_mode():
            train_step(model, batches, cross_entropy_loss, loop_precision, state, ())
    return step


def live_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, *batch: Tensor) -> int:
    """Bytes of the distinct storages held by parameters, gradients, buffers, optimizer states and
    the batch."""
    tensors = [*model.parameters(), *model.buffers(), *batch]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in _tensors_in(state)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _tensors_in(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    return [t for v in vars(value).values() for t in _tensors_in(v)] if hasattr(value, "__dict__") else []


def _phase_peaks(call, device: torch.device) -> dict[str, int]:
    """Peak bytes allocated above the starting point during ``call()``, per phase."""
    if device.type == "cuda":
        # CUDA's peak counter is not time-stamped: the whole step counts as one phase
        return {"step": cuda_peak_bytes(call)}
    memory, spans = cpu_allocation_events(call)
    spans = [span for span in spans if span[2] in PHASES]
    peaks = dict.fromkeys(PHASES, 0)
    running = 0
    for start, nbytes in memory:
        running += nbytes
        phase = next((name for a, b, name in spans if a <= start <= b), None)
        if phase:
            peaks[phase] = max(peaks[phase], running)
    return peaks
