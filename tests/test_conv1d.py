"""GPT-2's ``transformers.pytorch_utils.Conv1D`` projections are handled wherever nn.Linear is (issue 19)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit
from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.errors import UserInputError
from slimkit.lowrank import LowRankConfig
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, Int8Linear, QuantLinear, WeightQuantConfig
from slimkit.selection import Conv1DLinear

transformers = pytest.importorskip("transformers")
PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=96, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def model(gpt2):
    return copy.deepcopy(gpt2)


def tokens():
    return torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(1))


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def projections(model, kind):
    return [n for n, m in model.named_modules() if isinstance(m, kind) and n.endswith(PROJECTIONS)]


def test_conv1d_linear_computes_what_conv1d_computed(model):
    x = tokens()
    before = model(x).logits
    slimkit.selection.linear_like(model)
    assert len(projections(model, Conv1DLinear)) == 8
    # same products, transposed storage: only the summation order of the matmul differs
    torch.testing.assert_close(model(x).logits, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config, kind, floor", [
    (WeightQuantConfig("int8"), QuantLinear, 0.999),  # int8 per channel: relative error ~1e-3
    (WeightQuantConfig("int4", group_size=32), QuantLinear, 0.99),  # int4 groups of 32: ~5% per weight
    (ActivationQuantConfig(), Int8Linear, 0.999),  # W8A8 per token
])
def test_quantization_reaches_every_projection_and_round_trips(model, tmp_path, config, kind, floor):
    x = tokens()
    before = model(x).logits
    slimkit.quantize(model, config)
    assert len(projections(model, kind)) == 8  # was 0: Conv1D is not an nn.Linear
    after = model(x).logits
    assert cosine(after, before) > floor
    assert torch.equal(slimkit.load(slimkit.save(model, tmp_path / "q"))(x).logits, after)


def test_unstructured_pruning_masks_the_projections(model):
    report = slimkit.prune(model, PruneConfig(sparsity=0.5))
    pruned = {r.layer: r.sparsity for r in report.layers if not r.skipped}
    assert {n for n in pruned if n.endswith(PROJECTIONS)} == set(projections(model, nn.Linear))
    assert all(abs(s - 0.5) < 1e-3 for s in pruned.values())


def test_structured_pruning_removes_heads_and_channels_of_the_conv1d_projections(model):
    # before Conv1D was seen as Linear this removed nothing and reported nothing; then GPT-2's attention was
    # refused as untraceable; now it is a unit (tests/pruning/test_graph.py checks the arithmetic)
    report = slimkit.prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=tokens())
    removed = {r.layer: (r.unit, r.before, r.after) for r in report.layers}
    heads = {name: v for name, v in removed.items() if v[0] == "heads"}
    assert set(heads) == {f"transformer.h.{i}.attn" for i in range(2)}
    assert all(after == before // 2 for _, before, after in heads.values())
    assert model(tokens()).logits.shape[-1] == model.config.vocab_size


def test_lowrank_factorizes_the_projections(model, tmp_path):
    slimkit.factorize(model, LowRankConfig(rank=8, include=("*.mlp.*",)))
    factorized = [n for n, m in model.named_modules() if type(m).__name__ == "LowRankLinear"]
    assert factorized == [f"transformer.h.{i}.mlp.{p}" for i in range(2) for p in ("c_fc", "c_proj")]
    x = tokens()
    assert torch.equal(slimkit.load(slimkit.save(model, tmp_path / "f"))(x).logits, model(x).logits)


def test_lora_on_c_attn_equals_peft_on_conv1d(gpt2):
    peft = pytest.importorskip("peft")
    model = copy.deepcopy(gpt2)
    names = lora.inject(model, LoRAConfig(rank=4, alpha=8, targets=("*.c_attn",)))
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    adapters = lora.adapter_layers(model)
    with torch.no_grad():
        for layer in adapters.values():
            layer.lora_B.weight.normal_(0, 0.05)
    twin = peft.get_peft_model(copy.deepcopy(gpt2), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                                    fan_in_fan_out=True))
    state = twin.state_dict()
    with torch.no_grad():
        for name in names:
            for ab in ("lora_A", "lora_B"):
                state[f"base_model.model.{name}.{ab}.default.weight"].copy_(getattr(adapters[name], ab).weight)
    x = tokens()
    ours, theirs = model.eval()(x).logits, twin.eval()(x).logits
    assert (ours - gpt2(x).logits).abs().max() > 1e-2  # the adapters change the output
    # the same float32 products, summed in another order: a few ulps of logits of size ~1
    assert (ours - theirs).abs().max() < 1e-6


def test_a_transform_with_nothing_to_touch_names_the_layer_kinds_it_saw():
    model = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8))
    with pytest.raises(UserInputError, match=r"Sequential has no nn.Linear layer to quantize; its layers with "
                       r"weights are Embedding \(1\), LayerNorm \(1\)"):
        slimkit.quantize(model, WeightQuantConfig("int8"))
