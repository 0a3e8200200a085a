import numpy as np
import pytest
import torch
from torch import nn

from slimkit.lowrank import LowRankConfig, LowRankLinear, budget_rank, energy_rank
from slimkit.lowrank.svd import energy_kept
from tests.reference import lowrank as ref


def matrix_with_singular_values(values, rows: int, cols: int) -> torch.Tensor:
    """U diag(values) V^T with random orthonormal U (rows, k) and V (cols, k), in float64."""
    k = len(values)
    u = torch.linalg.qr(torch.randn(rows, k, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(cols, k, dtype=torch.float64))[0]
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_reproduces_the_layer(bias):
    linear = nn.Linear(48, 32, bias=bias)
    x = torch.randn(5, 7, 48)
    layer = LowRankLinear.from_linear(linear, rank=32)
    torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.full_weight(), linear.weight, atol=1e-5, rtol=0)


def test_truncation_is_the_best_rank_r_approximation():
    linear = nn.Linear(40, 24)
    layer = LowRankLinear.from_linear(linear, rank=6)
    expected = ref.truncated(linear.weight.detach().double().numpy(), 6)
    np.testing.assert_allclose(layer.full_weight().detach().double().numpy(), expected, atol=1e-5)
    x = torch.randn(3, 40)
    torch.testing.assert_close(layer(x), x @ torch.from_numpy(expected).float().T + linear.bias, atol=1e-5, rtol=1e-5)


# squared values 16, 9, 4, 1 (total 30): energy e needs the smallest r with a prefix sum >= 30 e
@pytest.mark.parametrize("energy, rank", [(0.5, 1), (16 / 30, 1), (0.54, 2), (25 / 30, 2), (0.84, 3), (29 / 30, 3),
                                          (0.97, 4), (1.0, 4)])
def test_energy_rank_is_exact_on_a_matrix_with_known_singular_values(energy, rank):
    weight = matrix_with_singular_values([4.0, 3.0, 2.0, 1.0], 12, 9)
    values = torch.linalg.svdvals(weight)
    assert energy_rank(values, energy) == rank == ref.energy_rank(values.tolist(), energy)
    assert energy_kept(values, rank) == pytest.approx([16, 25, 29, 30][rank - 1] / 30, abs=1e-12)


def test_energy_rank_agrees_with_the_reference_on_a_random_spectrum():
    values = torch.linalg.svdvals(torch.randn(64, 40, dtype=torch.float64))
    for energy in (0.1, 0.5, 0.9, 0.99):
        assert energy_rank(values, energy) == ref.energy_rank(values.tolist(), energy)


@pytest.mark.parametrize("rows, cols, budget, rank", [(384, 384, 0.5, 96), (1536, 384, 0.5, 153), (512, 128, 0.5, 51),
                                                      (10, 10, 0.05, 0)])
def test_budget_rank_keeps_at_most_the_budget(rows, cols, budget, rank):
    assert budget_rank(rows, cols, budget) == rank
    assert rank * (rows + cols) <= budget * rows * cols < (rank + 1) * (rows + cols)


def test_config_rank_rules_and_round_trip():
    config = LowRankConfig(energy=0.9, include="blocks.*", exclude=["*.qkv"])
    assert config.include == ("blocks.*",) and config.exclude == ("*.qkv",) and config.rule == "energy=0.9"
    assert LowRankConfig.from_dict(config.to_dict()) == config
