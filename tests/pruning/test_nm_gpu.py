"""2:4 masks through torch's semi-structured sparse kernels on CUDA (skipped without a GPU)."""

import pytest
import torch
from torch import nn

from slimkit.pruning import PruneConfig, prune
from slimkit.pruning.nm import is_two_four, to_semi_structured

pytestmark = pytest.mark.gpu


def _two_four_model(dtype):
    model = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 512))
    prune(model, PruneConfig(nm=(2, 4)))
    return model.to("cuda", dtype).eval()


def test_semi_structured_layers_compute_the_same_outputs():
    model = _two_four_model(torch.float16)
    assert all(is_two_four(layer.weight) for layer in (model[0], model[2]))
    x = torch.randn(256, 2048, device="cuda", dtype=torch.float16)
    expected = model(x)
    speedups = to_semi_structured(model, example_batch=256, only_faster=False)
    assert set(speedups) == {"0", "2"} and all(s > 0 for s in speedups.values())
    assert type(model[0].weight).__name__.startswith("SparseSemiStructuredTensor")
    torch.testing.assert_close(model(x), expected, atol=2e-2, rtol=1e-2)


def test_only_faster_leaves_slower_layers_dense():
    model = _two_four_model(torch.bfloat16)
    speedups = to_semi_structured(model, example_batch=16)
    for name, speedup in speedups.items():
        sparse = type(model.get_submodule(name).weight).__name__.startswith("SparseSemiStructuredTensor")
        assert sparse == (speedup > 1)

