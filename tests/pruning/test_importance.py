import torch
from torch import nn

from slimkit.models import from_spec
from slimkit.pruning import PruneConfig, prune
from slimkit.pruning.importance import accumulated_grads, weight_scores
from slimkit.pruning.sparsegpt import sparsegpt
from tests.reference.pruning import wanda_scores


def test_taylor_scores_are_weight_times_the_gradient_of_the_calibration_loss():
    mlp = from_spec("mlp:hidden=16")
    data = [(torch.randn(8, 64), torch.randint(0, 10, (8,))) for _ in range(2)]
    grads = accumulated_grads(mlp, [("net.1", mlp.net[1])], data)
    loss = sum(nn.functional.cross_entropy(mlp(x), y, reduction="sum") for x, y in data)
    expected, = torch.autograd.grad(loss, mlp.net[1].weight)
    torch.testing.assert_close(grads["net.1"], expected)
    assert mlp.net[1].weight.grad is None  # the model's own gradients are left as they were
    scores = weight_scores("taylor", mlp.net[1], grad=grads["net.1"])
    torch.testing.assert_close(scores, (mlp.net[1].weight * expected).abs())


def test_wanda_prunes_by_weight_times_input_norm_within_each_row():
    layer = nn.Linear(8, 4)
    x = torch.randn(32, 8) * torch.linspace(0.1, 3, 8)  # inputs of very different scales
    report = prune(nn.Sequential(layer), PruneConfig(sparsity=0.5, method="wanda"), data=[x])
    expected = torch.tensor(wanda_scores(layer.weight.tolist(), x.tolist()))
    keep = layer.weight_mask
    for row, scores in zip(keep, expected):  # the 4 highest scores of each row survive
        assert set(row.nonzero().flatten().tolist()) == set(scores.topk(4).indices.tolist())
    assert report.sparsity == 0.5


def test_sparsegpt_reconstructs_the_layer_output_better_than_magnitude():
    torch.manual_seed(1)
    x = torch.randn(512, 8) @ torch.randn(8, 64) + 0.3 * torch.randn(512, 64)  # correlated inputs: second order matters
    w = torch.randn(32, 64)
    hessian = x.double().T @ x.double()
    pruned, keep = sparsegpt(w, hessian, 0.5)
    assert int((~keep).sum()) == 32 * 32 and bool((pruned[~keep] == 0).all())
    magnitude = w * (w.abs() >= w.abs().flatten().kthvalue(1024).values)
    dense = x @ w.T
    assert (x @ pruned.T - dense).norm() < 0.5 * (x @ magnitude.T - dense).norm()  # measured 0.26
    nm_weight, nm_keep = sparsegpt(w, hessian, 0.0, nm=(2, 4))
    assert bool((nm_keep.view(32, 16, 4).sum(-1) == 2).all()) and bool((nm_weight[~nm_keep] == 0).all())


def test_model_sparsegpt_is_sequential_layer_by_layer():
    """prune(method="sparsegpt") equals a naive loop: each layer's Hessian from the model run from
    its input with the layers before it already pruned, then SparseGPT on that layer."""
    import copy

    from slimkit.models import from_spec
    from slimkit.pruning import PruneConfig, prune, remove_masks
    from tests.reference.calibrate import naive_layer_inputs

    torch.manual_seed(0)
    model = from_spec("gpt:n_layer=2,n_embd=64").eval()
    calib = [torch.randint(0, 256, (2, 32)) for _ in range(3)]
    expected = copy.deepcopy(model)
    for name, layer in expected.named_modules():
        if isinstance(layer, torch.nn.Linear) and name != "lm_head":
            hessian = naive_layer_inputs(expected, layer, calib)[0]
            with torch.no_grad():
                layer.weight.copy_(sparsegpt(layer.weight, hessian, 0.5)[0])
    prune(model, PruneConfig(sparsity=0.5, method="sparsegpt", scope="layer", exclude=("lm_head",)), calib)
    remove_masks(model)
    for (name, got), want in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.allclose(got, want, atol=1e-6), name
