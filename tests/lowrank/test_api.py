import pytest
import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.io import load, save
from slimkit.lowrank import LowRankConfig, LowRankConv2d, LowRankLinear, factorize
from slimkit.manifest import get_manifest
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP
from slimkit.models.resnet import ResNet, ResNetConfig
from tests.conftest import needs_minilm

SMALL_GPT = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)


class Net(nn.Module):
    """One layer for each skip rule."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Linear(64, 48)  # factorized
        self.square = nn.Linear(4, 4)  # rank 3 keeps 24 >= 16 weights
        self.thin = nn.Linear(64, 2)  # rank 3 >= full rank 2
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
        self.conv = nn.Conv2d(8, 16, 3)


def test_gpt_mlp_halved_with_tied_head_skipped():
    model = GPT(SMALL_GPT).eval()
    x = torch.randint(0, 256, (2, 16))
    report = factorize(model, LowRankConfig(param_budget=0.5, exclude=("*.attn.*",)))
    mlp = [r for r in report.factorized]
    assert [r.layer for r in mlp] == [f"blocks.{i}.mlp.{j}" for i in range(2) for j in (0, 2)]
    assert all(r.rank == 12 and r.params_after == 12 * 160 for r in mlp)  # floor(0.5 * 32 * 128 / 160)
    assert report.params_after <= 0.5 * report.params_before
    assert "weight tied to wte.weight" in report.skipped["lm_head"]
    assert isinstance(model.blocks[0].mlp[0], LowRankLinear) and model(x).shape == (2, 16, 256)
    entries = {e["layer"]: e for e in get_manifest(model)}
    assert entries["blocks.0.mlp.0"] == {"layer": "blocks.0.mlp.0", "technique": "low-rank", "method": "svd",
                                         "rank": 12, "params_before": 4096, "params_after": 1920,
                                         "energy_kept": pytest.approx(report.factorized[0].energy_kept, abs=1e-6),
                                         "rule": "param_budget=0.5"}
    assert entries["blocks.0.attn.qkv"]["skipped"] == "matched by exclude ['*.attn.*']"


def test_skip_reasons():
    model = Net()
    report = factorize(model, LowRankConfig(rank=3))
    assert report.skipped == {
        "square": "rank 3 (rank=3) would keep 24 weights, not fewer than the layer's 16; left alone",
        "thin": "rank 3 (rank=3) is at or above full rank min(out, in) = 2; left alone",
        "depthwise": "grouped convolution (groups=8); only groups=1 is factorized",
    }
    assert [r.layer for r in report.factorized] == ["wide", "conv"]
    assert report.factorized[1].rank == (3, 3) and isinstance(model.conv, LowRankConv2d)
    assert type(model.square) is nn.Linear


def test_energy_one_and_a_tiny_budget_leave_layers_alone():
    assert factorize(Net(), LowRankConfig(energy=1.0, include=("wide",))).skipped["wide"] == \
        "rank 48 (energy=1.0) is at or above full rank min(out, in) = 48; left alone"
    assert factorize(Net(), LowRankConfig(param_budget=0.1, include=("square",))).skipped["square"] == \
        "param_budget=0.1 is too small for even rank 1 in this layer (16 weights); left alone"
    assert factorize(Net(), LowRankConfig(rank=100, include=("conv",))).skipped["conv"] == \
        "rank 16x8 (rank=100) is at or above full rank 16x8; left alone"
    assert factorize(Net(), LowRankConfig(rank=2, conv="skip", include=("conv",))).skipped["conv"] == \
        "conv layers left alone (conv='skip')"


def test_a_factorized_model_is_not_factorized_twice():
    model = Net()
    factorize(model, LowRankConfig(rank=8, include=("wide",)))
    report = factorize(model, LowRankConfig(rank=2, include=("wide*",)))
    assert report.skipped["wide.first"] == "a factor of the already factorized layer 'wide'"


def test_tucker2_budget_and_energy_on_the_resnet():
    model = ResNet(ResNetConfig()).eval()
    report = factorize(model, LowRankConfig(param_budget=0.5, include=("blocks.*",)))
    for r in report.factorized:
        assert r.params_after <= 0.5 * r.params_before
        assert 0 < r.energy_kept < 1
    assert report.factorized[0].method == "tucker2"
    assert {r.method for r in report.factorized if "shortcut" in r.layer} == {"spatial"}  # a 1x1 conv: plain SVD


@pytest.mark.parametrize("kwargs, message", [
    ({"energy": 0.0}, "energy=0.0: must lie in (0, 1]"),
    ({"energy": 1.5}, "energy=1.5: must lie in (0, 1]"),
    ({"rank": 0}, "rank=0: must be a positive whole number"),
    ({"rank": -3}, "rank=-3: must be a positive whole number"),
    ({"param_budget": 1.0}, "param_budget=1.0: must lie in (0, 1)"),
    ({}, "choose exactly one way to pick ranks: rank=, energy= or param_budget= (got none)"),
    ({"rank": 4, "energy": 0.9}, "(got rank, energy)"),
    ({"rank": 4, "conv": "cp"}, "conv='cp': choose one of tucker2, spatial, skip"),
])
def test_bad_config_messages(kwargs, message):
    with pytest.raises(UserInputError) as info:
        LowRankConfig(**kwargs)
    assert message in str(info.value)


def test_unknown_setting_in_from_dict():
    with pytest.raises(UserInputError, match="unknown low-rank setting.s. ranks; known: rank, energy"):
        LowRankConfig.from_dict({"ranks": 3})


def test_pattern_matching_nothing_lists_the_closest_names():
    with pytest.raises(UserInputError) as info:
        factorize(GPT(SMALL_GPT), LowRankConfig(rank=4, include=("blocks.*.mpl.*",)))
    assert str(info.value).startswith("include pattern 'blocks.*.mpl.*' matches no Linear or Conv2d layer; "
                                      "closest names: blocks.0.mlp.0")
    with pytest.raises(UserInputError, match="exclude pattern 'head' matches no Linear"):
        factorize(GPT(SMALL_GPT), LowRankConfig(rank=4, exclude=("head",)))


def test_model_without_linear_layers_and_nan_weights():
    with pytest.raises(UserInputError, match="LayerNorm has no nn.Linear or nn.Conv2d layer to factorize"):
        factorize(nn.LayerNorm(4), LowRankConfig(rank=1))
    model = Net()
    with torch.no_grad():
        model.wide.weight[3, 5] = float("nan")
    with pytest.raises(UserInputError, match=r"layer 'wide': weight has 1 NaN/Inf value\(s\), first at index "
                                             r"\(3, 5\); .* exclude=.'wide'.$"):
        factorize(model, LowRankConfig(rank=2))


@pytest.mark.parametrize("build, example", [
    (lambda: GPT(SMALL_GPT), lambda: torch.randint(0, 256, (2, 16))),
    (lambda: ResNet(ResNetConfig()), lambda: torch.randn(3, 1, 8, 8)),
    (lambda: MLP(), lambda: torch.randn(3, 64)),
])
def test_save_load_round_trip_is_exact(tmp_path, build, example):
    model = build().eval()
    factorize(model, LowRankConfig(param_budget=0.4))
    x = example()
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert torch.equal(loaded(x), model(x))
    assert get_manifest(loaded) == get_manifest(model)


def test_factorized_then_quantized_round_trip(tmp_path):
    from slimkit.quantization import QuantLinear, WeightQuantConfig, quantize

    model = GPT(SMALL_GPT).eval()
    factorize(model, LowRankConfig(rank=8, include=("blocks.*.mlp.*",)))
    quantize(model, WeightQuantConfig(format="int8", group_size=None, include=("blocks.*.mlp.*",)))
    assert isinstance(model.blocks[0].mlp[0].first, QuantLinear)
    x = torch.randint(0, 256, (2, 16))
    save(model, tmp_path)
    assert torch.equal(load(tmp_path)(x), model(x))


@needs_minilm
def test_minilm_round_trip(tmp_path):
    from slimkit.data import minilm

    loaded = minilm()
    model = loaded.model
    report = factorize(model, LowRankConfig(param_budget=0.5, include=("encoder.*",)))
    assert len(report.factorized) == 36 and report.params_after <= 0.5 * report.params_before
    batch = loaded.tokenizer(["Return the value.", "Open a file for reading."], padding=True, return_tensors="pt")
    save(model, tmp_path)
    again = load(tmp_path)
    assert type(again).__name__ == "BertModel"
    assert torch.equal(again(**batch).last_hidden_state, model(**batch).last_hidden_state)


def test_report_table_leaves_out_unmatched_layers_unless_asked():
    report = factorize(Net(), LowRankConfig(rank=3, include=("wide", "square")))
    table = report.table()
    assert "| wide | svd | 3 | 3,072 | 336 |" in table and "would keep 24 weights" in table
    assert "thin" not in table and table.endswith("(3 layer(s) not matched by include left out)")
    assert "| thin | svd |  | 128 | 128 |  | not matched by include ['wide', 'square'] |" in report.table(unmatched=True)


def test_factorized_conv_then_static_int8_round_trip(tmp_path):
    """Static quantization folds the BatchNorm into the last stage and replaces the stages with
    Int8Conv2d; the saved artifact must rebuild both (it used to fail on the missing bias / weight)."""
    from slimkit.quantization import ActivationQuantConfig, quantize_activations

    torch.manual_seed(0)
    model = ResNet(ResNetConfig()).eval()
    factorize(model, LowRankConfig(param_budget=0.5, include=("blocks.0.conv2",)))
    calib = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    quantize_activations(model, ActivationQuantConfig(mode="static", calib_batches=2), calib=calib)
    x = torch.randn(3, 1, 8, 8)
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert type(loaded.blocks[0].conv2.stages[-1]) is type(model.blocks[0].conv2.stages[-1])
    assert torch.equal(loaded(x), model(x))
