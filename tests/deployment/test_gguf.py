"""GGUF export, checked by readers slimkit did not write: gguf's GGUFReader and its Q4_0/Q8_0 dequantizer
give back slimkit's weights exactly, and transformers loads the file (gguf_file=) with slimkit's logits."""

import copy

import pytest
import torch

import slimkit
from slimkit.deployment import ExportRefused
from slimkit.quantization import WeightQuantConfig
from slimkit.quantization.modules import QuantLinear

gguf = pytest.importorskip("gguf", reason="the gguf reader (test extra) is not installed")
transformers = pytest.importorskip("transformers")

CONFIGS = {"q4_0": WeightQuantConfig("int4", group_size=32), "q8_0": WeightQuantConfig("int8", group_size=32),
           "f32": None}


def _export(model, tmp_path, name):
    if CONFIGS[name] is not None:
        slimkit.quantize(model, CONFIGS[name])
    return slimkit.export(model, tmp_path / name, to="gguf") / "model.gguf"


def _unpermute(rows: torch.Tensor, heads: int) -> torch.Tensor:
    # transformers' _reverse_permute_weights, written independently: (heads, d/2, 2) -> (heads, 2, d/2)
    return rows.reshape(heads, rows.shape[0] // heads // 2, 2, -1).transpose(1, 2).reshape(rows.shape)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gguf_reader_dequantizes_to_slimkits_weights(tiny_llama, tmp_path, name):
    path = _export(tiny_llama, tmp_path, name)
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.block_count"].contents() == 2
    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == 2 + 2 * 9 + 1  # embeddings, final norm, 9 per block, untied output
    expected_type = {"q4_0": "Q4_0", "q8_0": "Q8_0", "f32": "F32"}[name]
    for block in range(2):
        for ours, theirs in [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                             ("mlp.down_proj", "ffn_down")]:
            layer = tiny_llama.get_submodule(f"model.layers.{block}.{ours}")
            tensor = by_name[f"blk.{block}.{theirs}.weight"]
            assert tensor.tensor_type.name == expected_type
            values = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()).float()
            if theirs in ("attn_q", "attn_k"):
                values = _unpermute(values, 4 if theirs == "attn_q" else 2)
            weight = layer.dequantized_weight() if isinstance(layer, QuantLinear) else layer.weight.detach()
            # Q4_0/Q8_0 decode (nibble - 8) * d and q * d in float32 from the same float16 scale: exact
            assert torch.equal(values, weight)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_loads_the_file_with_slimkits_logits(tiny_llama, token_ids, tmp_path, name):
    path = _export(tiny_llama, tmp_path, name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    with torch.no_grad():
        # the weights transformers rebuilds are slimkit's exactly (previous test): the same logits
        assert torch.equal(loaded(token_ids).logits, tiny_llama(token_ids).logits)


def test_refusals(tiny_llama, tmp_path):
    cases = {"asym": (WeightQuantConfig("int4", group_size=32, symmetric=False), "has no exact GGUF type"),
             "g64": (WeightQuantConfig("int4", group_size=64), "group_size=32"),
             "nf4": (WeightQuantConfig("nf4", group_size=32), "has no exact GGUF type"),
             "fp32-scales-double-quant": (WeightQuantConfig("int4", group_size=32, double_quant=True),
                                          "not float16 values")}
    for name, (config, message) in cases.items():
        model = slimkit.quantize(copy.deepcopy(tiny_llama), config)
        with pytest.raises(ExportRefused, match=message):
            slimkit.export(model, tmp_path / name, to="gguf")
    from slimkit.models import GPT, GPTConfig

    with pytest.raises(ExportRefused, match="Llama-family"):
        slimkit.export(GPT(GPTConfig()), tmp_path / "gpt", to="gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a calibrated method or a 256-wide model: seconds, not milliseconds
def test_float_layers_as_q4_k_beat_q4_0_and_load_in_transformers(tmp_path):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      dtype="float32")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    path = slimkit.export(model, tmp_path / "q4k", to="gguf", float_layers="q4_k") / "model.gguf"
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    reference = copy.deepcopy(model)
    for ours, theirs in [("self_attn.q_proj", "attn_q"), ("self_attn.v_proj", "attn_v"), ("mlp.up_proj", "ffn_up")]:
        tensor = tensors[f"blk.0.{theirs}.weight"]
        assert tensor.tensor_type.name == "Q4_K"
        weight = model.get_submodule(f"model.layers.0.{ours}").weight.detach()
        values = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()).float()
        values = _unpermute(values, 4) if theirs == "attn_q" else values
        q4_0 = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q4_0)
        q4_0 = torch.from_numpy(gguf.quants.dequantize(q4_0, gguf.GGMLQuantizationType.Q4_0).copy())
        # llama.cpp's weighted search is what makes Q4_K (4.5 bits) beat Q4_0 (4.5 bits); a wrong block layout
        # would decode to noise with an error near 1
        assert (values - weight).norm() < 0.9 * (q4_0 - weight).norm()
        reference.get_submodule(f"model.layers.0.{ours}").weight.data = values
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == "Q4_K"  # 512 inputs: two super-blocks a row
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    layer = loaded.model.layers[0]
    assert torch.equal(layer.self_attn.q_proj.weight, reference.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(layer.mlp.up_proj.weight, reference.model.layers[0].mlp.up_proj.weight)
