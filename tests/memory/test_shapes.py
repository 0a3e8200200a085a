"""ModelShape from configs, modules, presets and parameter counts; bad inputs name the problem."""

import json

import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.memory import TrainSetup, from_hf_config, from_module, from_params, preset, shape_of
from slimkit.models.gpt import GPT, GPTConfig

LLAMA_7B_CONFIG = {"model_type": "llama", "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008,
                   "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                   "vocab_size": 32000, "max_position_embeddings": 2048, "tie_word_embeddings": False}


def test_gpt2_config_matches_transformers_parameter_count():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    assert from_hf_config(config.to_dict()).n_params() == sum(p.numel() for p in model.parameters())


def test_llama_config_matches_transformers_parameter_count():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_attention_heads=4,
                                      num_key_value_heads=2, num_hidden_layers=2, vocab_size=300)
    model = transformers.LlamaForCausalLM(config)
    shape = from_hf_config(config.to_dict())
    assert (shape.mlp, shape.norm, shape.kv_heads) == ("swiglu", "rmsnorm", 2)
    assert shape.n_params() == sum(p.numel() for p in model.parameters())


def test_llama_config_file_equals_preset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_7B_CONFIG))
    shape = shape_of(str(tmp_path))
    assert shape.replace(name="llama-7b") == preset("llama-7b")


def test_bert_key_names():
    shape = from_hf_config({"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
                            "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522,
                            "max_position_embeddings": 512, "hidden_dropout_prob": 0.1})
    assert (shape.mlp, shape.norm, shape.fused_qkv, shape.dropout, shape.positions) == (
        "gelu", "layernorm", False, True, 512)


def test_reference_gpt_module_is_exact():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16))
    shape = from_module(model)
    counted = shape.replace(params=None).n_params()
    assert counted == shape.n_params() == sum(p.numel() for p in model.parameters())


def test_generic_module_keeps_its_parameter_count():
    model = torch.nn.Sequential(torch.nn.Linear(100, 50), torch.nn.Linear(50, 10))
    assert from_module(model).n_params() == 100 * 50 + 50 + 50 * 10 + 10


def test_from_params_follows_gpt3_aspect():
    shape = from_params(175_000_000_000)
    assert (shape.n_layer, shape.hidden) == (96, 12288)


@pytest.mark.parametrize("spec, message", [
    ("llama-9b", "neither a preset"),
    ({"model_type": "x", "hidden_size": 8}, "lacks n_layer, n_head, vocab"),
    (0, "positive parameter count"),
])
def test_bad_model_specs(spec, message):
    with pytest.raises(UserInputError, match=message):
        shape_of(spec)


def test_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not a readable JSON config"):
        shape_of(str(tmp_path))


def test_bad_shape():
    with pytest.raises(UserInputError, match="must divide evenly"):
        preset("llama-7b").replace(n_head=7)


@pytest.mark.parametrize("changes, message", [
    ({"precision": "fp8"}, "precision='fp8' is unknown"),
    ({"batch": 0}, "batch=0 must be at least 1"),
    ({"qlora": True}, "needs lora_rank > 0"),
    ({"lora_rank": -1}, "lora_rank=-1"),
    ({"zero_stage": 4}, "zero_stage=4 is unknown"),
    ({"world_size": 0}, "world_size=0 must be at least 1"),
])
def test_bad_setups(changes, message):
    with pytest.raises(UserInputError, match=message):
        TrainSetup(**changes)


def test_setup_round_trip():
    setup = TrainSetup(precision="amp-bf16", lora_rank=8, qlora=True, checkpointing="selective")
    assert TrainSetup.from_dict(setup.to_dict()) == setup
    assert preset("llama-3-8b").from_dict(preset("llama-3-8b").to_dict()) == preset("llama-3-8b")


def test_shape_and_setup_round_trip_through_dicts_and_refuse_unknown_keys():
    from slimkit.memory.presets import PRESETS

    shape, setup = next(iter(PRESETS.values())), TrainSetup()
    assert type(shape).from_dict(shape.to_dict()) == shape and TrainSetup.from_dict(setup.to_dict()) == setup
    with pytest.raises(UserInputError, match="unknown model shape setting.*n_layers; known: name, n_layer"):
        type(shape).from_dict({**shape.to_dict(), "n_layers": 2})
    with pytest.raises(UserInputError, match="unknown training set-up setting.*batch_size"):
        TrainSetup.from_dict({"batch_size": 8})
