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
