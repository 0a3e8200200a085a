import torch
from torch import nn

from slimkit.models import from_spec
from slimkit.pruning import PruneConfig, masks, prune, remove_masks
from slimkit.pruning.masks import global_masks, layer_mask, nm_mask, row_mask
from slimkit.pruning.schedule import KeepMasks
from slimkit.training import TrainConfig, train
from tests.reference.pruning import magnitude_keep, nm_keep


def test_layer_mask_matches_the_naive_reference_and_hits_the_count_exactly():
    w = torch.randn(13, 17)
    w[0, :4] = 0.5  # ties are broken by position in both
    for sparsity in (0.0, 0.3, 0.5, 0.9, 0.99):
        keep = layer_mask(w.abs(), sparsity)
        assert keep.flatten().tolist() == magnitude_keep(w.flatten().tolist(), sparsity)
        assert int((~keep).sum()) == round(sparsity * w.numel())


def test_global_mask_is_one_threshold_over_all_layers():
    a, b = torch.randn(8, 8), 3 * torch.randn(4, 16)
    keeps = global_masks({"a": a.abs(), "b": b.abs()}, 0.75)
    reference = magnitude_keep(a.flatten().tolist() + b.flatten().tolist(), 0.75)
    assert torch.cat([keeps["a"].flatten(), keeps["b"].flatten()]).tolist() == reference
    assert int(keeps["a"].sum() + keeps["b"].sum()) == 32


def test_row_mask_prunes_within_rows_to_an_exact_layer_total():
    scores = torch.rand(7, 10)
    keep = row_mask(scores, 0.45)
    assert int((~keep).sum()) == round(0.45 * 70)
    assert set((~keep).sum(1).tolist()) <= {4, 5}  # 31.5 spread over 7 rows


def test_nm_masks_keep_n_of_every_m():
    w = torch.randn(6, 16)
    for n, m in ((2, 4), (4, 8)):
        keep = nm_mask(w.abs(), n, m)
        assert [r.tolist() for r in keep] == [nm_keep(r.tolist(), n, m) for r in w]
        assert keep.float().mean().item() == n / m


def test_prune_reaches_the_target_exactly_and_skips_tied_weights():
    gpt = from_spec("gpt:n_layer=1,n_embd=32")
    report = prune(gpt, PruneConfig(sparsity=0.6))
    skipped = {r.layer: r.skipped for r in report.layers if r.skipped}
    assert "lm_head" in skipped and "tied to wte.weight" in skipped["lm_head"]
    for name, keep in masks(gpt).items():
        weight = gpt.get_submodule(name).weight
        assert int((weight == 0).sum()) == int((~keep).sum()) == round(0.6 * weight.numel())


def test_masks_survive_training_with_adamw_and_weight_decay():
    mlp = from_spec("mlp:hidden=32")
    prune(mlp, PruneConfig(sparsity=0.8, scope="global"))
    keep = {n: k.clone() for n, k in masks(mlp).items()}
    data = [(torch.randn(16, 64), torch.randint(0, 10, (16,))) for _ in range(4)]
    train(mlp, data * 3, TrainConfig(steps=10, lr=1e-2, weight_decay=0.1), callbacks=[KeepMasks()])
    for name, k in keep.items():
        assert bool((mlp.get_submodule(name).weight[~k] == 0).all())
        assert bool((mlp.get_submodule(name).weight[k] != 0).all())


def test_any_loop_sees_zeros_and_the_saved_state_is_masked():
    mlp = from_spec("mlp:hidden=32")
    prune(mlp, PruneConfig(sparsity=0.5))
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):  # a hand-written loop without KeepMasks
        optimizer.zero_grad()
        nn.functional.cross_entropy(mlp(torch.randn(8, 64)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
    keep = masks(mlp)["net.1"]
    assert bool((mlp.state_dict()["net.1.weight"][~keep] == 0).all())
    mlp(torch.randn(1, 64))  # the forward hook zeroes again
    assert bool((mlp.net[1].weight[~keep] == 0).all())
    remove_masks(mlp)
    assert masks(mlp) == {} and not hasattr(mlp.net[1], "weight_mask")
