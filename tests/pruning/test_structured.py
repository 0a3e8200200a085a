import copy

import pytest
import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.io import load, save
from slimkit.models import from_spec
from slimkit.pruning import PruneConfig, prune
from slimkit.pruning.graph import dependency_groups
from slimkit.pruning.modules import PrunedSelfAttention
from tests.conftest import needs_minilm


class Branchy(nn.Module):
    """Concatenation, split, depthwise and grouped convolutions, and a residual add after a split."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.bn = nn.BatchNorm2d(12)
        self.mix = nn.Conv2d(12, 16, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.dw(torch.cat([self.a(x), self.b(x)], dim=1))))
        left, right = self.mix(y).split(8, dim=1)
        z = self.grouped(left) + right
        return self.head(z.mean(dim=(2, 3)))


def _zero_half(model, x):
    """Zero every other channel of each prunable group (filters and the following norms' affine terms)."""
    groups, units, _ = dependency_groups(model, (x,))
    with torch.no_grad():
        for g in groups:
            if g.blocked:
                continue
            dead = torch.arange(0, g.size, 2)
            for name in g.producers:
                model.get_submodule(name).weight[dead] = 0
                if model.get_submodule(name).bias is not None:
                    model.get_submodule(name).bias[dead] = 0
            for name, offset, start, length in g.channelwise:
                layer = model.get_submodule(name)
                here = dead[(dead >= start) & (dead < start + length)] - start + offset
                layer.weight[here] = 0
                if getattr(layer, "bias", None) is not None:
                    layer.bias[here] = 0
    return groups, units


def _randomise_batchnorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(), m.running_var.uniform_(0.5, 2), m.weight.normal_(), m.bias.normal_()


@pytest.mark.parametrize("spec", ["cnn", "mlp:hidden=32-16"])
def test_removing_zero_channels_leaves_outputs_unchanged_and_round_trips(spec, tmp_path):
    model = from_spec(spec).eval()
    _randomise_batchnorm(model)
    x = torch.randn(8, 1, 8, 8)
    _zero_half(model, x)
    expected = model(x)
    report = prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert all(r.after == r.before - r.before // 2 for r in report.layers if r.unit == "channels" and not r.skipped)
    restored = load(save(model, tmp_path / "pruned"))
    assert torch.equal(restored(x), model(x))


def test_residual_adds_couple_their_producers_and_norms_follow():
    groups, _, _ = dependency_groups(from_spec("cnn").eval(), (torch.randn(2, 1, 8, 8),))
    coupled = {frozenset(g.producers): g for g in groups if not g.blocked}
    first = coupled[frozenset({"stem.0", "blocks.0.conv2", "blocks.1.conv2"})]
    assert {c[0] for c in first.channelwise} == {"stem.1", "blocks.0.bn2", "blocks.1.bn2"}
    assert {"blocks.0.conv1", "blocks.2.shortcut.0", "head"} <= {c[0] for c in first.consumers} | {"head"}
    assert frozenset({"blocks.2.conv2", "blocks.2.shortcut.0", "blocks.3.conv2"}) in coupled
    assert frozenset({"blocks.0.conv1"}) in coupled


def test_concat_split_depthwise_and_grouped_convolutions_stay_consistent():
    model = Branchy().eval()
    _randomise_batchnorm(model)
    x = torch.randn(4, 3, 8, 8)
    groups, _ = _zero_half(model, x)
    blocked = {frozenset(g.producers): g.blocked for g in groups}
    assert "grouped convolution grouped" in blocked[frozenset({"mix"})]  # its first half feeds the grouped conv
    expected = model(x)
    prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    assert (model.a.out_channels, model.b.out_channels, model.dw.groups, model.bn.num_features) == (4, 2, 6, 6)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_gpt_heads_and_mlp_width_are_removed_and_the_model_round_trips(tmp_path):
    gpt = from_spec("gpt:n_layer=2,n_embd=64,n_head=4").eval()
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():  # heads 1 and 3 of block 0 contribute nothing: their value rows and output columns are 0
        attn = gpt.blocks[0].attn
        for h in (1, 3):
            attn.qkv.weight[128 + 16 * h:128 + 16 * (h + 1)] = 0
            attn.qkv.bias[128 + 16 * h:128 + 16 * (h + 1)] = 0
            attn.proj.weight[:, 16 * h:16 * (h + 1)] = 0
    expected = gpt(x)
    report = prune(gpt, PruneConfig(structured=True, ratio=0.5, include=("blocks.0.attn",)), example_inputs=x)
    assert isinstance(gpt.blocks[0].attn, PrunedSelfAttention) and gpt.blocks[0].attn.n_head == 2
    assert gpt.blocks[0].mlp[0].out_features == 256 and gpt.blocks[1].attn.n_head == 4  # not included
    torch.testing.assert_close(gpt(x), expected, atol=1e-5, rtol=1e-5)
    prune(gpt, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    assert gpt.blocks[1].mlp[0].out_features == 128 and gpt.blocks[1].attn.n_head == 2
    assert any("traced child by child" in n for n in report.notes)
    restored = load(save(gpt, tmp_path / "gpt"))
    assert torch.equal(restored(x), gpt(x))


def test_a_ratio_that_would_empty_a_group_keeps_one_and_says_so():
    mlp = from_spec("mlp:hidden=2").eval()
    report = prune(mlp, PruneConfig(structured=True, ratio=0.9), example_inputs=torch.randn(2, 64))
    assert mlp.net[1].out_features == 1
    assert report.clamped == ["net.1"] and "clamped to keep 1" in report.layers[-1].note


class Sorter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.sort(self.fc1(x), dim=-1).values)


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h if h.sum() > 0 else -h)


def test_an_op_the_graph_cannot_follow_is_an_error_naming_op_and_module():
    with pytest.raises(UserInputError, match="cannot follow op 'sort' in module"):
        prune(Sorter(), PruneConfig(structured=True, ratio=0.5), example_inputs=torch.randn(2, 4))
    with pytest.raises(UserInputError, match="cannot trace module 'Branching'.*control flow"):
        prune(Branching(), PruneConfig(structured=True, ratio=0.5), example_inputs=torch.randn(2, 4))


@needs_minilm
def test_minilm_heads_and_intermediate_shrink_and_save(tmp_path):
    from slimkit.data import minilm

    reference = minilm()
    model, batch = reference.model.eval(), reference.tokenizer(["a short sentence"], return_tensors="pt")
    report = prune(model, PruneConfig(structured=True, ratio=0.25), example_inputs=batch)
    layer = model.encoder.layer[0]
    assert layer.attention.self.query.out_features == 9 * 32 and layer.intermediate.dense.out_features == 1152
    assert model.config.intermediate_size == 1152
    assert {r.layer for r in report.layers if r.unit == "heads"} == {f"encoder.layer.{i}" for i in range(6)}
    restored = load(save(model, tmp_path / "minilm"))
    assert torch.equal(restored(**batch).last_hidden_state, model(**batch).last_hidden_state)


def test_wanda_keeps_the_channels_that_carry_the_signal_as_a_naive_score_does():
    # channels 0-3 read the direction the data lies along (small weights, large activations); channels 4-15
    # read directions the data never takes (large weights, zero activations): l1 keeps the silent ones
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    direction = torch.zeros(8)
    direction[0] = 1.0
    with torch.no_grad():
        model[0].weight[:4] = 0.1 * torch.arange(1.0, 5.0)[:, None] * direction
        model[0].weight[4:] = 3 * torch.randn(12, 8) * (1 - direction)
        model[0].bias.zero_()
    data = [5 * torch.randn(32, 1) * direction + 1e-3 * torch.randn(32, 8) for _ in range(4)]
    hidden = torch.cat([model[1](model[0](x)) for x in data]).detach()
    # the reference: |W2[:, c]|_1 * ||h_c||_2 over every calibration row, computed naively
    naive = model[2].weight.detach().abs().sum(0) * hidden.square().sum(0).sqrt()
    expected = naive.argsort(descending=True)[:8].sort().values
    x = data[0]
    wanda, l1 = copy.deepcopy(model), copy.deepcopy(model)
    prune(wanda, PruneConfig(structured=True, ratio=0.5, method="wanda"), data=data, example_inputs=x)
    prune(l1, PruneConfig(structured=True, ratio=0.5, method="l1"), example_inputs=x)
    kept = [next(i for i in range(16) if torch.equal(model[0].weight[i], row)) for row in wanda[0].weight]
    assert kept == expected.tolist() and set(range(4)) <= set(kept)
    with torch.no_grad():
        err = {name: (m(x) - model(x)).norm().item() for name, m in (("wanda", wanda), ("l1", l1))}
    assert err["wanda"] < 0.5 * err["l1"]
    with pytest.raises(UserInputError, match="method='wanda' needs data="):
        prune(copy.deepcopy(model), PruneConfig(structured=True, ratio=0.5, method="wanda"), example_inputs=x)
