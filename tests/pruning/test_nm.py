import pytest
import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.pruning import PruneConfig, prune
from slimkit.pruning.nm import is_two_four, to_semi_structured


def test_two_four_pruning_is_recognised():
    layer = nn.Linear(16, 4)
    assert not is_two_four(layer.weight)
    prune(nn.Sequential(layer), PruneConfig(nm=(2, 4)))
    assert is_two_four(layer.weight)


def test_semi_structured_kernels_without_cuda_say_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match="semi-structured sparse kernels need a CUDA GPU"):
        to_semi_structured(nn.Linear(8, 8))


def test_layers_whose_inputs_do_not_divide_into_groups_of_m_are_skipped_with_the_reason():
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 4))
    report = prune(model, PruneConfig(nm=(2, 4)))
    assert {r.layer: r.skipped for r in report.layers} == {"0": "input size 6 is not a multiple of M=4", "1": None}
    assert is_two_four(model[1].weight)
