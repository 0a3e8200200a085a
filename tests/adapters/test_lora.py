import copy

import pytest
import torch
import torch.nn.functional as F

from slimkit import formats
from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.errors import UserInputError
from slimkit.manifest import get_manifest
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.training.checkpointing import enable_checkpointing

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)
ATTN = ("blocks.*.attn.qkv", "blocks.*.attn.proj")


def tokens(batch=3, length=16):
    return torch.randint(0, SMALL.vocab_size, (batch, length))


def randomize_adapters(model, std=0.05):
    """B starts at zero; give it values so that the update is not trivially zero."""
    with torch.no_grad():
        for layer in lora.adapter_layers(model).values():
            layer.lora_B.weight.normal_(0, std)


def naive_lora(x, weight, bias, a, b, scale):
    return x @ weight.T + bias + scale * (x @ a.T) @ b.T


def test_forward_is_base_plus_scaled_low_rank_update():
    model = GPT(SMALL)
    weight, bias = model.blocks[0].attn.qkv.weight.detach().clone(), model.blocks[0].attn.qkv.bias.detach().clone()
    lora.inject(model, LoRAConfig(rank=4, alpha=12, targets=ATTN))
    randomize_adapters(model)
    layer = model.blocks[0].attn.qkv
    x = torch.randn(5, 64)
    expected = naive_lora(x, weight, bias, layer.lora_A.weight, layer.lora_B.weight, 3.0)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)


def test_inject_starts_equal_and_leaves_only_adapters_trainable():
    model = GPT(SMALL)
    x = tokens()
    before = model(x)
    names = lora.inject(model, LoRAConfig(rank=4))
    assert names == [f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")]
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{ab}.weight" for n in names for ab in ("lora_A", "lora_B")}
    expected = sum(4 * (m.in_features + m.out_features) for m in lora.adapter_layers(model).values())
    total = sum(p.numel() for p in GPT(SMALL).parameters()) + expected
    assert lora.trainable_parameters(model) == (expected, total)


def test_tied_head_is_skipped_with_reason_in_manifest():
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4))
    entries = {e["layer"]: e for e in get_manifest(model)}
    assert "weight tied to wte.weight" in entries["lm_head"]["skipped"]
    assert entries["blocks.0.attn.qkv"] == {"layer": "blocks.0.attn.qkv", "technique": "lora", "rank": 4,
                                            "alpha": 16.0, "adapter_dtype": "float32"}


def test_merge_equals_unmerged_and_unmerge_restores_weights():
    model = GPT(SMALL).eval()
    original = copy.deepcopy(model.state_dict())
    lora.inject(model, LoRAConfig(rank=8, targets=ATTN))
    randomize_adapters(model)
    x = tokens()
    unmerged = model(x)
    assert lora.merge(model) == [f"blocks.{i}.attn.{n}" for i in range(2) for n in ("qkv", "proj")]
    merged = model(x)
    assert (merged - unmerged).abs().max() < 1e-5
    assert not torch.equal(model.blocks[0].attn.qkv.base.weight, original["blocks.0.attn.qkv.weight"])
    lora.unmerge(model)
    torch.testing.assert_close(model.blocks[0].attn.qkv.base.weight, original["blocks.0.attn.qkv.weight"],
                               atol=1e-6, rtol=0)
    assert (model(x) - unmerged).abs().max() < 1e-5


def test_qlora_forward_equals_dequantized_base_plus_adapter():
    model = GPT(SMALL)
    weight, bias = model.blocks[1].mlp[0].weight.detach().clone(), model.blocks[1].mlp[0].bias.detach().clone()
    lora.inject(model, LoRAConfig(rank=4, base="nf4", targets=("*.mlp.0",)))
    randomize_adapters(model)
    layer = model.blocks[1].mlp[0]
    dequantized = formats.dequantize(formats.quantize(weight, "nf4", granularity="group", group_size=64,
                                                      double_quant=True))
    x = torch.randn(7, 64)
    expected = naive_lora(x, dequantized, bias, layer.lora_A.weight, layer.lora_B.weight, 4.0)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    entry = next(e for e in get_manifest(model) if e["layer"] == "blocks.1.mlp.0")
    # 64x256 weight: 4 bits + one 8-bit scale per 64 + an fp32 scale and offset over all 256 scales
    assert entry["technique"] == "qlora" and abs(entry["bits_per_weight"] - (4 + 8 / 64 + 64 / (64 * 256))) < 1e-3


def adapter_grads(model, x):
    model.zero_grad()
    F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all("lora_" in n for n in grads)
    return grads


@pytest.mark.parametrize("base", ["float", "nf4"])
def test_gradients_reach_only_adapters_also_through_checkpointing(base):
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4, base=base))
    randomize_adapters(model)
    x = tokens()
    plain = adapter_grads(model, x)
    assert len(plain) == 2 * len(lora.adapter_layers(model))  # A and B of every layer
    assert all(g.abs().sum() > 0 for g in plain.values())
    enable_checkpointing(model, "blocks")
    checkpointed = adapter_grads(model, x)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_bfloat16_adapters_train_in_bfloat16():
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4, base="nf4", dtype="bfloat16", targets=ATTN))
    grads = adapter_grads(model, tokens())
    assert {g.dtype for g in grads.values()} == {torch.bfloat16}
    assert model(tokens()).dtype == torch.float32


def test_dropout_only_in_training_and_mode_is_kept():
    model = GPT(SMALL).eval()
    lora.inject(model, LoRAConfig(rank=4, dropout=0.5, targets=ATTN))
    randomize_adapters(model)
    x = tokens()
    assert not model.blocks[0].attn.qkv.training
    torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
    model.train()
    assert not torch.equal(model(x), model(x))


def test_nf4_merge_is_refused_unless_dequantized():
    model = GPT(SMALL).eval()
    lora.inject(model, LoRAConfig(rank=4, base="nf4", targets=ATTN))
    randomize_adapters(model)
    x = tokens()
    before = model(x)
    with pytest.raises(UserInputError, match="NF4 base .*'blocks.0.attn.qkv'.*dequantize=True"):
        lora.merge(model)
    assert lora.merge(model, dequantize=True) == [f"blocks.{i}.attn.{n}" for i in range(2) for n in ("qkv", "proj")]
    assert type(model.blocks[0].attn.qkv.base) is torch.nn.Linear
    assert (model(x) - before).abs().max() < 1e-5


def test_target_matching_nothing_lists_closest_names():
    with pytest.raises(UserInputError, match=r"targets pattern '\*\.qkvv' matches no Linear layer; closest names: "
                                             r"blocks\.0\.attn\.qkv"):
        lora.inject(GPT(SMALL), LoRAConfig(targets=("*.qkvv",)))


def test_rank_larger_than_layer_is_rejected_naming_the_layer():
    with pytest.raises(UserInputError, match=r"rank=65 exceeds min\(in, out\)=64 of layer 'blocks.0.attn.qkv'"):
        lora.inject(GPT(SMALL), LoRAConfig(rank=65, targets=ATTN))


def test_second_inject_and_empty_selection_are_rejected():
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=2, targets=ATTN))
    with pytest.raises(UserInputError, match="already has LoRA adapters"):
        lora.inject(model, LoRAConfig(rank=2))
    with pytest.raises(UserInputError, match="no layer of GPT is left for LoRA to adapt: lm_head: weight tied"):
        lora.inject(GPT(SMALL), LoRAConfig(targets=("lm_head",)))


@pytest.mark.parametrize("base", ["float", "nf4"])
def test_bfloat16_autocast_computes_adapters_in_bfloat16(base):
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4, base=base, targets=ATTN))
    randomize_adapters(model)
    x = tokens()
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits: ~1% of the largest logit after two blocks
    assert (out.float() - reference).abs().max() < 0.02 * reference.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = adapter_grads(model, x)
    assert len(grads) == 8 and {g.dtype for g in grads.values()} == {torch.float32}


def test_model_without_linear_layers_is_rejected():
    with pytest.raises(UserInputError, match="Embedding has no nn.Linear layer for LoRA to adapt"):
        lora.inject(torch.nn.Embedding(10, 4), LoRAConfig())


def test_nf4_base_input_gradient_matches_a_float_base_holding_the_dequantized_weight():
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4, base="nf4", targets=ATTN))
    randomize_adapters(model)
    quantized = model.blocks[0].attn.qkv
    floated = copy.deepcopy(quantized)
    floated.dequantize_base()
    x = torch.randn(3, 5, 64)
    grads = []
    for layer in (quantized, floated):
        xi = x.clone().requires_grad_(True)
        (layer(xi) * torch.linspace(-1, 1, 192)).sum().backward()
        grads.append((xi.grad, layer.lora_A.weight.grad, layer.lora_B.weight.grad))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_nf4_base_keeps_no_float_weight_for_backward():
    model = GPT(SMALL)
    lora.inject(model, LoRAConfig(rank=4, base="nf4", targets=("*.mlp.0",)))
    layer = model.blocks[0].mlp[0]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        layer(torch.randn(10, 64, requires_grad=True))
    assert saved and (256, 64) not in saved and (64, 256) not in saved  # only inputs and low-rank tensors


def test_unload_leaves_plain_linears_with_the_merged_weights():
    model = GPT(SMALL).eval()
    lora.inject(model, LoRAConfig(rank=4, targets=ATTN))
    randomize_adapters(model)
    x = tokens()
    before = model(x)
    with pytest.raises(UserInputError, match=r"4 layer\(s\) are not merged .*call merge\(model\) first"):
        lora.unload(model)
    lora.merge(model)
    assert lora.unload(model) == [f"blocks.{i}.attn.{n}" for i in range(2) for n in ("qkv", "proj")]
    assert type(model.blocks[0].attn.qkv) is torch.nn.Linear and not lora.adapter_layers(model)
    assert (model(x) - before).abs().max() < 1e-5
