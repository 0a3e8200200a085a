"""slimkit's LoRA against peft's on the same weights, and on MiniLM (a Hugging Face BertModel)."""

import copy

import pytest
import torch

from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.models.gpt import GPT, GPTConfig
from tests.conftest import needs_minilm

peft = pytest.importorskip("peft")


def peft_twin(base, names, rank, alpha, target_modules, adapters):
    """peft's LoRA model on a copy of ``base`` carrying slimkit's adapter weights."""
    twin = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=rank, lora_alpha=alpha,
                                                                    target_modules=target_modules))
    state = twin.state_dict()
    with torch.no_grad():
        for name in names:
            for ab in ("lora_A", "lora_B"):
                state[f"base_model.model.{name}.{ab}.default.weight"].copy_(getattr(adapters[name], ab).weight)
    return twin.eval()


def with_adapters(base, config):
    model = copy.deepcopy(base)
    names = lora.inject(model, config)
    with torch.no_grad():
        for layer in lora.adapter_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
    return model.eval(), names


def test_equal_to_peft_on_the_gpt():
    base = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64)).eval()
    model, names = with_adapters(base, LoRAConfig(rank=8, alpha=16, targets=("*.qkv", "*.proj")))
    twin = peft_twin(base, names, 8, 16, ["qkv", "proj"], lora.adapter_layers(model))
    x = torch.randint(0, 256, (2, 64))
    ours, theirs = model(x), twin(x)
    assert (ours - base(x)).abs().max() > 1e-2  # the adapters do change the output
    assert (ours - theirs).abs().max() < 1e-5
    assert lora.trainable_parameters(model)[0] == sum(p.numel() for p in twin.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def minilm():
    from slimkit.data import minilm, sentences

    loaded = minilm()
    batch = loaded.tokenizer(list(sentences()[:8]), padding=True, return_tensors="pt")
    return loaded.model, batch


@needs_minilm
def test_minilm_query_value_adapters_are_under_one_percent_and_equal_peft(minilm):
    base, batch = minilm
    model, names = with_adapters(base, LoRAConfig(rank=8, alpha=16, targets=("*.query", "*.value")))
    assert len(names) == 12
    trainable, total = lora.trainable_parameters(model)
    assert trainable == 12 * 8 * (384 + 384) and trainable / total < 0.01
    twin = peft_twin(base, names, 8, 16, ["query", "value"], lora.adapter_layers(model))
    with torch.no_grad():
        ours, theirs = model(**batch).last_hidden_state, twin(**batch).last_hidden_state
        assert (ours - base(**batch).last_hidden_state).abs().max() > 1e-2
    assert (ours - theirs).abs().max() < 1e-5


@needs_minilm
def test_minilm_qlora_trains_only_adapters_and_merges(minilm):
    base, batch = minilm
    model, _ = with_adapters(base, LoRAConfig(rank=4, base="nf4", targets=("*.attention.output.dense",)))
    model.train()
    model(**batch).last_hidden_state.square().mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {f"encoder.layer.{i}.attention.output.dense.{ab}.weight" for i in range(6)
                     for ab in ("lora_A", "lora_B")}
    model.eval()
    with torch.no_grad():
        before = model(**batch).last_hidden_state
        lora.merge(model, dequantize=True)
        change = model(**batch).last_hidden_state - before
    # Relative, not 1e-5 absolute: outputs reach ~6 and float32 rounding alone moves this model's
    # output by ~5e-5 (measured against a float64 run of the same weights).
    assert change.norm() / before.norm() < 1e-5
