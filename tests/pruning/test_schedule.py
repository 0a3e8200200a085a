import torch

from slimkit.models import from_spec
from slimkit.pruning import PruneConfig, masks, prune
from slimkit.pruning.schedule import GradualPruning, KeepMasks, Snapshot, polynomial_sparsity, rewind
from slimkit.training.finetune import iterative_prune
from slimkit.training import TrainConfig, train
from tests.reference.pruning import zhu_gupta


def _data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(4)] * 10


def _sparsity(model) -> float:
    weights = [model.get_submodule(n).weight for n in masks(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_polynomial_schedule_matches_zhu_and_gupta():
    for step in range(0, 120, 7):
        assert abs(polynomial_sparsity(step, 0.9, 10, 100) - zhu_gupta(step, 0.9, 10, 100)) < 1e-12


def test_gradual_pruning_reaches_the_final_sparsity_inside_training():
    mlp = from_spec("mlp:hidden=64")
    schedule = GradualPruning(mlp, PruneConfig(sparsity=0.8), start=2, end=20, every=3)
    train(mlp, _data(), TrainConfig(steps=30, lr=1e-2), callbacks=[schedule])
    targets = [r.sparsity for r in schedule.reports]
    assert targets == sorted(targets) and abs(targets[-1] - 0.8) < 1e-3
    assert abs(_sparsity(mlp) - 0.8) < 1e-3


def test_iterative_pruning_reaches_the_target_exactly():
    mlp = from_spec("mlp:hidden=64")
    reports = iterative_prune(mlp, PruneConfig(sparsity=0.75, scope="global"), _data(), TrainConfig(steps=3),
                              rounds=3)
    assert [round(r.sparsity, 3) for r in reports] == [round(1 - 0.25 ** (k / 3), 3) for k in (1, 2, 3)]
    assert abs(_sparsity(mlp) - 0.75) < 1e-3


def test_weight_rewinding_resets_survivors_and_keeps_the_pruned_at_zero():
    mlp = from_spec("mlp:hidden=64")
    snapshot = Snapshot(step=2)
    train(mlp, _data(), TrainConfig(steps=10, lr=1e-2), callbacks=[snapshot])
    prune(mlp, PruneConfig(sparsity=0.5))
    rewind(mlp, snapshot.state)
    keep = masks(mlp)["net.1"]
    assert torch.equal(mlp.net[1].weight[keep], snapshot.state["net.1.weight"][keep])
    assert bool((mlp.net[1].weight[~keep] == 0).all())
    train(mlp, _data(), TrainConfig(steps=3, lr=1e-2), callbacks=[KeepMasks()])
    assert bool((mlp.net[1].weight[~keep] == 0).all())
