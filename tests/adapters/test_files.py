import copy
import json

import pytest
import torch

import slimkit
from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.errors import ArtifactError, UserInputError
from slimkit.manifest import get_manifest
from slimkit.models.gpt import GPT, GPTConfig

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)


def tuned(config):
    """A base model and a copy of it with adapters whose B is non-zero (as after training)."""
    base = GPT(SMALL).eval()
    model = copy.deepcopy(base)
    lora.inject(model, config)
    with torch.no_grad():
        for layer in lora.adapter_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
    return base, model


@pytest.mark.parametrize("base_kind", ["float", "nf4"])
def test_adapters_alone_round_trip_into_a_fresh_base(tmp_path, base_kind):
    base, model = tuned(LoRAConfig(rank=4, alpha=8, targets=("*.qkv", "*.mlp.2"), base=base_kind))
    lora.save_adapters(model, tmp_path)
    assert json.loads((tmp_path / "adapters.json").read_text())["config"]["base"] == base_kind
    names = lora.load_adapters(base, tmp_path)
    assert names == list(lora.adapter_layers(model))
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(base(x), model(x), atol=0, rtol=0)
    assert lora.trainable_parameters(base) == lora.trainable_parameters(model)


def test_load_adapters_names_missing_and_unexpected_layers(tmp_path):
    _, model = tuned(LoRAConfig(rank=4, targets=("*.qkv",)))
    lora.save_adapters(model, tmp_path)
    other = GPT(SMALL)
    lora.inject(other, LoRAConfig(rank=4, targets=("blocks.0.attn.qkv", "*.proj")))
    with pytest.raises(UserInputError, match=r"missing in the model \['blocks.1.attn.qkv'\]; unexpected in the "
                                             r"model \['blocks.0.attn.proj', 'blocks.1.attn.proj'\]"):
        lora.load_adapters(other, tmp_path)


def test_load_adapters_rejects_wrong_shapes_and_foreign_files(tmp_path):
    _, model = tuned(LoRAConfig(rank=4, targets=("*.qkv",)))
    lora.save_adapters(model, tmp_path)
    wider = GPT(SMALL)
    lora.inject(wider, LoRAConfig(rank=8, targets=("*.qkv",)))
    with pytest.raises(ArtifactError, match=r"blocks.0.attn.qkv.lora_A.weight should be \(8, 64\), found \(4, 64\)"):
        lora.load_adapters(wider, tmp_path)
    (tmp_path / "adapters.json").write_text("{}")
    with pytest.raises(ArtifactError, match="adapters.json: not a LoRA adapter description"):
        lora.load_adapters(GPT(SMALL), tmp_path)
    with pytest.raises(ArtifactError, match="adapters.json: missing"):
        lora.load_adapters(GPT(SMALL), tmp_path / "nowhere")


@pytest.mark.parametrize("base_kind", ["float", "nf4"])
def test_whole_model_round_trips_through_slimkit_save(tmp_path, base_kind):
    _, model = tuned(LoRAConfig(rank=4, base=base_kind, dtype="bfloat16"))
    if base_kind == "float":
        lora.merge(model)
    slimkit.save(model, tmp_path)
    loaded = slimkit.load(tmp_path)
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    assert get_manifest(loaded) == get_manifest(model)
    assert loaded.blocks[0].attn.qkv.merged == (base_kind == "float")
    lora.freeze(loaded)
    assert lora.trainable_parameters(loaded) == lora.trainable_parameters(model)


def test_saving_without_adapters_and_loading_into_merged_adapters_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="no LoRA adapters to save; call slimkit.lora.inject first"):
        lora.save_adapters(GPT(SMALL), tmp_path)
    _, model = tuned(LoRAConfig(rank=4, targets=("*.qkv",)))
    lora.save_adapters(model, tmp_path)
    lora.merge(model)
    with pytest.raises(UserInputError, match="'blocks.0.attn.qkv' are merged into its weight; unmerge"):
        lora.load_adapters(model, tmp_path)
