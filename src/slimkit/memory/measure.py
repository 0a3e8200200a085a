"""Measured peak memory of real training steps, to set beside the planner's prediction.

CUDA: ``torch.cuda.max_memory_allocated``. CPU has no allocator statistics, so the step runs under
torch's profiler with ``profile_memory=True``: it records every allocation and free the CPU
allocator sees (tensors, and also the short-lived workspaces kernels allocate inside an op, which a
TorchDispatchMode or weakref-tracked storages would miss because they only see op outputs). The
running sum of those events, started from the bytes already live (weights, optimizer states,
the batch), gives the peak; ``record_function`` spans around forward, backward and the optimizer
step say in which phase it happened.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def train_step(model: nn.Module, batches: list[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer,
               autocast_dtype: torch.dtype | None = None, phase=contextlib.nullcontext) -> float:
    """One optimizer step over ``batches`` (micro-batches of equal size, gradients accumulated): for
    each, forward (autocast when AMP), byte-level cross-entropy, backward; then the optimizer step
    and ``zero_grad(set_to_none=True)``. ``phase(name)`` wraps each part (the profiler's markers).

    >>> train_step(gpt, [(x, y)], torch.optim.AdamW(gpt.parameters()))  # doctest: +SKIP
    5.61
    """
    total = 0.0
    for x, y in batches:
        with phase("forward"), torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16,
                                              enabled=autocast_dtype is not None):
            logits = model(x)  # (B, T, V)
            # equal micro-batches: the mean over all their tokens is the mean of the means
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1)) / len(batches)
            del logits  # as a training loop's frame would after the loss; keeps it out of backward's peak
        with phase("backward"):
            loss.backward()
        total += loss.item()
    with phase("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return total


def measure(model: nn.Module, setup: TrainSetup, steps: int = 3, seed: int = 0) -> Measurement:
    """Prepare ``model`` as ``setup`` says (precision, checkpointing, LoRA, optimizer), run ``steps``
    training steps on real pycorpus windows and return the peak of the last ``steps - 1`` (the first
    step allocates the optimizer states and is a warm-up).

    >>> measure(GPT(GPTConfig()), TrainSetup(batch=8, seq=128)).peak  # doctest: +SKIP
    43516928
    """
    from slimkit.data import pycorpus, random_windows
    from slimkit.memory.prepare import prepare

    if steps < 2:
        raise UserInputError(f"steps={steps}: measuring needs at least 2 steps (the first is a warm-up)")
    device = next(model.parameters()).device
    model, optimizer, autocast_dtype = prepare(model, setup)
    generator = torch.Generator().manual_seed(seed)
    corpus = pycorpus().train
    steps_batches = [[tuple(t.to(device) for t in random_windows(corpus, setup.batch, setup.seq, generator))
                      for _ in range(setup.accumulate)] for _ in range(steps)]
    model.train()
    train_step(model, steps_batches[0], optimizer, autocast_dtype)
    phases: dict[str, int] = {}
    for batches in steps_batches[1:]:
        resident = live_bytes(model, optimizer, *[t for batch in batches for t in batch])
        peaks = _phase_peaks(lambda: train_step(model, batches, optimizer, autocast_dtype,
                                                torch.profiler.record_function), device)
        for name, peak in peaks.items():
            phases[name] = max(phases.get(name, 0), resident + peak)
    phase = max(phases, key=phases.get)
    return Measurement(peak=phases[phase], phase=phase, phases=phases, resident=resident, device=device.type)


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
