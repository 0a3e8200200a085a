"""The dependency graph's extension points and the model families of issue 19: a registered op and
module type, squeeze-excite with Hardsigmoid, a refusal's exclude= advice, Hugging Face Llama (GQA).

References: a model whose to-be-removed channels are zeroed first computes exactly what the pruned
model computes (removed channels contribute only zeros), and a Llama's removed heads and channels
are equivalent to zeroing their o_proj / down_proj input columns in the original."""

import copy

import pytest
import torch
from torch import nn

from slimkit.errors import UserInputError
from slimkit.io import load, save
from slimkit.pruning import PruneConfig, prune
from slimkit.pruning import ops
from tests.pruning.test_structured import Branching, Sorter, _randomise_batchnorm, _zero_half
from tests.reference.vision import MobileNetV3Small, ViT

# Removing a zero channel changes only the length of float sums by exact zeros; what differs is the
# summation order of the remaining terms in the shorter matmuls: a few float32 ulps of values O(1).
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


class Clipped(nn.Module):
    """Elementwise, but with data-dependent control flow torch.fx cannot trace."""

    def forward(self, x):
        return x.clamp(-10, 10) if x.abs().max() > 10 else x


class WithCustomParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.clip, self.fc2 = nn.Linear(4, 8), Clipped(), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.nn.functional.softshrink(self.clip(self.fc1(x))))


def test_a_registered_op_and_module_type_are_followed(monkeypatch):
    model, x = WithCustomParts().eval(), torch.randn(5, 4)
    untraced = copy.deepcopy(model)  # traced child by child: fc1's channels meet a boundary and stay
    report = prune(untraced, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    assert untraced.fc1.out_features == 8 and "traced child by child" in report.notes[0]
    monkeypatch.setitem(ops.MODULES, Clipped, ops.pass_module)  # as ops.register_module([Clipped], ...) does
    with pytest.raises(UserInputError, match="cannot follow op 'softshrink'"):
        prune(copy.deepcopy(model), PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    monkeypatch.setitem(ops.FUNCTIONS, "softshrink", ops.passthrough)
    _zero_half(model, x)
    expected = model(x)
    report = prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    assert model.fc1.out_features == model.fc2.in_features == 4
    assert [r.after for r in report.layers if r.layer == "fc1"] == [4]
    torch.testing.assert_close(model(x), expected, **TOLERANCE)


def test_register_function_and_module_fill_the_tables(monkeypatch):
    monkeypatch.setattr(ops, "FUNCTIONS", dict(ops.FUNCTIONS))
    monkeypatch.setattr(ops, "MODULES", dict(ops.MODULES))
    ops.register_function(["softshrink"], ops.passthrough)
    ops.register_module([Clipped], ops.pass_module)
    assert ops.FUNCTIONS["softshrink"] is ops.passthrough and ops.module_rule(Clipped()) is ops.pass_module


def test_squeeze_excite_with_hardsigmoid_and_hardswish_is_pruned():
    model, x = MobileNetV3Small().eval(), torch.randn(2, 3, 32, 32)
    _randomise_batchnorm(model)
    _zero_half(model, x)
    expected = model(x)
    report = prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    pruned = [r for r in report.layers if r.unit == "channels" and not r.skipped and r.after < r.before]
    assert any("fc1" in r.layer for r in pruned)  # the squeeze-excite bottleneck itself
    assert any("fc2" in r.layer for r in pruned)  # the excited channels, united with the block's own
    torch.testing.assert_close(model(x), expected, **TOLERANCE)


def test_vit_heads_and_mlps_narrow_and_the_class_token_concat_keeps_the_residual_stream():
    model, x = ViT().eval(), torch.randn(2, 3, 16, 16)
    _zero_half(model, x)
    original = copy.deepcopy(model)
    report = prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    reasons = {r.layer.split(",")[0]: r.skipped for r in report.layers if r.unit == "channels"}
    assert reasons["patch_embed"] == "combined with fixed values by cat"
    assert [block.mlp[0].out_features for block in model.blocks] == [64, 64]
    assert [block.attn.n_head for block in model.blocks] == [2, 2]  # the attention checked equal, then cut
    with torch.no_grad():
        for new, old in zip(model.blocks, original.blocks):
            heads = _kept(old.attn.qkv.weight[:32], new.attn.qkv.weight[:16], 8)  # query rows, 8 per head
            for h in set(range(4)) - set(heads):
                old.attn.proj.weight[:, h * 8:(h + 1) * 8] = 0
    torch.testing.assert_close(model(x), original(x), **TOLERANCE)


def test_a_refusals_exclude_advice_works_when_followed():
    x = torch.randn(2, 4)
    with pytest.raises(UserInputError, match=r"cannot follow op 'sort'.*exclude=\('fc1',\)"):
        prune(Sorter(), PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    for exclude in (("fc1",), ("*",)):
        model = Sorter()
        report = prune(model, PruneConfig(structured=True, ratio=0.5, exclude=exclude), example_inputs=x)
        assert model.fc1.out_features == 8 and any("sort" in note for note in report.notes)
    with pytest.raises(UserInputError, match=r"cannot trace module 'Branching'.*exclude=\('fc1', 'fc2'\)"):
        prune(Branching(), PruneConfig(structured=True, ratio=0.5), example_inputs=x)
    report = prune(Branching(), PruneConfig(structured=True, ratio=0.5, exclude=("fc*",)), example_inputs=x)
    assert "its layers are excluded" in report.notes[0]


def _kept(original: torch.Tensor, pruned: torch.Tensor, block: int) -> list[int]:
    """Which row blocks of ``original`` (``block`` rows each) ``pruned`` kept, in order."""
    blocks = original.split(block)
    return [next(i for i, b in enumerate(blocks) if torch.equal(b, p)) for p in pruned.split(block)]


@pytest.mark.slow  # a transformers model: 2-8 s on 2 shared cores
@pytest.mark.parametrize("kv_heads, method", [(2, "l1"), (4, "l1"), (2, "wanda")], ids=["gqa", "mha", "gqa-wanda"])
def test_llama_heads_in_gqa_groups_and_mlp_channels(kv_heads, method, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kv_heads,
                                      max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    original, ids = copy.deepcopy(model), torch.randint(0, 64, (2, 8))
    data = [torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    report = prune(model, PruneConfig(structured=True, ratio=0.5, method=method), example_inputs=ids, data=data)
    assert {r.layer: r.after for r in report.layers if r.unit == "heads"} == {
        "model.layers.0.self_attn": kv_heads // 2, "model.layers.1.self_attn": kv_heads // 2}
    d, group = 8, 4 // kv_heads
    with torch.no_grad():
        for new, old in zip(model.model.layers, original.model.layers):
            heads = _kept(old.self_attn.k_proj.weight, new.self_attn.k_proj.weight, d)
            assert _kept(old.self_attn.q_proj.weight, new.self_attn.q_proj.weight, group * d) == heads
            dead = [h for h in range(kv_heads) if h not in heads]
            for h in dead:  # every query head of a removed key/value head goes with it
                old.self_attn.o_proj.weight[:, h * group * d:(h + 1) * group * d] = 0
            channels = _kept(old.mlp.gate_proj.weight, new.mlp.gate_proj.weight, 1)
            assert len(channels) == 24 and _kept(old.mlp.up_proj.weight, new.mlp.up_proj.weight, 1) == channels
            old.mlp.down_proj.weight[:, [c for c in range(48) if c not in channels]] = 0
    torch.testing.assert_close(model(ids).logits, original(ids).logits, **TOLERANCE)
    reloaded = transformers.LlamaForCausalLM(model.config).eval()  # the edited config describes the model
    reloaded.load_state_dict(model.state_dict())
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    save(model, tmp_path / "llama")
    torch.testing.assert_close(load(tmp_path / "llama")(ids).logits, model(ids).logits, atol=0, rtol=0)


@pytest.mark.slow  # a transformers model: 2-8 s on 2 shared cores
def test_a_ratio_gqa_cannot_follow_is_refused_with_the_nearest_whole_groups():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=32)
    model, ids = transformers.LlamaForCausalLM(config).eval(), torch.randint(0, 64, (2, 8))
    before = copy.deepcopy(model.state_dict())
    # SmolLM2's shape: 3 key/value groups, so 25% would be 0.75 of a group
    with pytest.raises(UserInputError, match=r"ratio 0.25 would remove 0.75 of the 3 key/value head groups of "
                                             r"model.layers.0.self_attn .* Use ratio 0.3333 \(1 of 3 groups\), or keep "
                                             r"attention whole with "
                                             r"exclude=\('model.layers.\*.self_attn\*',\)"):
        prune(model, PruneConfig(structured=True, ratio=0.25), example_inputs=ids)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before any change
    report = prune(model, PruneConfig(structured=True, ratio=0.25, exclude=("model.layers.*.self_attn*",)),
                   example_inputs=ids)  # the advice, followed: MLP channels only
    assert model.config.num_key_value_heads == 3 and model.config.intermediate_size == 36
    assert any(r.unit == "heads" and r.skipped for r in report.layers)


@pytest.mark.slow  # a transformers model: 2-8 s on 2 shared cores
def test_gpt2_heads_and_mlp_channels_match_the_model_with_them_zeroed(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    original, ids = copy.deepcopy(model), torch.randint(0, 64, (2, 8))
    report = prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=ids)
    assert {r.layer: r.after for r in report.layers if r.unit == "heads"} == {
        "transformer.h.0.attn": 2, "transformer.h.1.attn": 2}
    d, width = 8, 32
    with torch.no_grad():
        for new, old in zip(model.transformer.h, original.transformer.h):
            qkv = old.attn.c_attn.weight.T  # Conv1D stores (in, out): as a Linear, rows are q | k | v outputs
            kept = new.attn.split_size
            heads = _kept(qkv[:width], new.attn.c_attn.weight[:kept], d)
            for part in (1, 2):  # each head's key and value rows leave with its query rows
                assert _kept(qkv[part * width:(part + 1) * width],
                             new.attn.c_attn.weight[part * kept:(part + 1) * kept], d) == heads
            for h in range(4):
                if h not in heads:
                    old.attn.c_proj.weight[h * d:(h + 1) * d] = 0  # Conv1D (in, out): the head's input rows
            channels = _kept(old.mlp.c_fc.weight.T, new.mlp.c_fc.weight, 1)
            assert len(channels) == 64
            old.mlp.c_proj.weight[[c for c in range(128) if c not in channels]] = 0
    torch.testing.assert_close(model(ids).logits, original(ids).logits, **TOLERANCE)
    save(model, tmp_path / "gpt2")  # the rebuilt attention splits c_attn at its pruned width
    torch.testing.assert_close(load(tmp_path / "gpt2")(ids).logits, model(ids).logits, atol=0, rtol=0)
    out = model.generate(ids[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)  # with its key/value cache
    assert out.shape == (1, 12)
