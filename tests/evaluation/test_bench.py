import pytest
import torch
from torch import nn

from slimkit.models.tasks import evaluate
from slimkit.evaluation.bench import peak_memory_bytes, resident_bytes
from slimkit.timing import latency_ms
from slimkit.models import GPT, MLP, GPTConfig


def test_latency_needs_five_runs_and_restores_threads():
    with pytest.raises(ValueError, match="at least 5"):
        latency_ms(lambda: None, runs=3)
    before = torch.get_num_threads()
    assert latency_ms(lambda: torch.ones(10).sum(), threads=1) > 0
    assert torch.get_num_threads() == before


def test_resident_bytes_count_tied_weights_once():
    model = GPT(GPTConfig(n_layer=1))
    assert resident_bytes(model) == 4 * sum(p.numel() for p in model.parameters())


def test_peak_memory_sees_the_activations():
    model = nn.Sequential(nn.Linear(512, 4096), nn.ReLU(), nn.Linear(4096, 512)).eval()
    x = torch.randn(64, 512)
    hidden = 64 * 4096 * 4  # bytes of one (64, 4096) fp32 activation
    peak = peak_memory_bytes(model, lambda: model(x)) - resident_bytes(model)
    # at least the hidden activation is alive; the linear->relu pair holds at most two of them
    assert hidden <= peak <= 2 * hidden + 64 * 512 * 4 + 65536


def test_evaluate_record_is_complete(tmp_path):
    record = evaluate(MLP(), name="mlp", runs=5)
    assert record.task == "digits" and record.metric == "accuracy" and 0 <= record.value <= 1
    assert record.params == record.nonzero == sum(p.numel() for p in MLP().parameters())
    assert record.artifact_bytes > 4 * record.params and record.latency_ms > 0
    assert record.peak_memory_bytes >= 4 * record.params and record.threads == 2
    assert record.compare(record) == {"quality_delta": 0.0, "bytes_ratio": 1.0, "speedup": 1.0,
                                      "memory_ratio": 1.0}
