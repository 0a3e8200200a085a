"""compressed-tensors export, checked by the readers slimkit did not write: compressed_tensors packs the
same codes and scales into the same bytes, and transformers loads the folder with slimkit's logits."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import slimkit
from slimkit.deployment import ExportRefused
from slimkit.deployment.compressed_tensors import pack_int32
from slimkit.quantization import WeightQuantConfig
from slimkit.quantization.activation import ActivationQuantConfig
from slimkit.quantization.activation.modules import Int8Linear, weight_codes
from slimkit.quantization.modules import QuantLinear

ct = pytest.importorskip("compressed_tensors", reason="the compressed-tensors reader (test extra) is not installed")
transformers = pytest.importorskip("transformers")

WEIGHT_ONLY = {
    "w4a16": WeightQuantConfig("int4", group_size=32),
    "w4a16-asym": WeightQuantConfig("int4", group_size=32, symmetric=False),
    "w8a16": WeightQuantConfig("int8", group_size=None),
    "w3a16-double-quant": WeightQuantConfig("int3", group_size=32, double_quant=True),
    "fp8": WeightQuantConfig("fp8_e4m3", group_size=None),
}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _load(folder, asymmetric=False):
    # transformers 5.25 runs asymmetric pack-quantized layers only once dequantized
    options = {"quantization_config": transformers.CompressedTensorsConfig(dequantize=True)} if asymmetric else {}
    return transformers.AutoModelForCausalLM.from_pretrained(folder, **options).eval()


@pytest.mark.parametrize("name", sorted(WEIGHT_ONLY))
def test_transformers_loads_the_folder_with_slimkits_logits(tiny_llama, token_ids, tmp_path, name):
    config = WEIGHT_ONLY[name]
    slimkit.quantize(tiny_llama, config)
    slimkit.export(tiny_llama, tmp_path / "ct", to="compressed-tensors")
    loaded = _load(tmp_path / "ct", asymmetric=not config.symmetric)
    # the decompressed weights are slimkit's (codes - offset) * scale in float32, bit for bit, and the rest of
    # the network is the same transformers code: the logits agree exactly
    assert torch.equal(_logits(loaded, token_ids), _logits(tiny_llama, token_ids))


@pytest.mark.parametrize("name", sorted(WEIGHT_ONLY))
def test_bytes_equal_what_compressed_tensors_writes(tiny_llama, tmp_path, name):
    float_model = copy.deepcopy(tiny_llama)
    slimkit.quantize(tiny_llama, WEIGHT_ONLY[name])
    slimkit.export(tiny_llama, tmp_path / "ours", to="compressed-tensors")
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())["quantization_config"]
    _compress_with_compressed_tensors(float_model, tiny_llama, ours, tmp_path / "theirs")
    theirs = json.loads((tmp_path / "theirs" / "config.json").read_text())["quantization_config"]
    assert ours == {**theirs, "version": ours["version"]}
    _assert_same_tensors(tmp_path / "ours", tmp_path / "theirs")


def test_w8a8_int_quantized_matches_compressed_tensors(tiny_llama, token_ids, tmp_path):
    float_model = copy.deepcopy(tiny_llama)
    slimkit.quantize(tiny_llama, ActivationQuantConfig(mode="dynamic"))
    slimkit.export(tiny_llama, tmp_path / "ours", to="compressed-tensors")
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())["quantization_config"]
    _compress_with_compressed_tensors(float_model, tiny_llama, ours, tmp_path / "theirs")
    _assert_same_tensors(tmp_path / "ours", tmp_path / "theirs")
    theirs = json.loads((tmp_path / "theirs" / "config.json").read_text())["quantization_config"]
    assert ours == {**theirs, "version": ours["version"]}
    expected, got = _logits(tiny_llama, token_ids), _logits(_load(tmp_path / "ours"), token_ids)
    # same int8 weights; compressed-tensors scales each token by amax/127.5 where slimkit uses amax/127, so
    # activations land on a grid 0.4% apart: the logits differ by a few activation rounding steps, not more
    assert (got - expected).abs().max() < 0.03 * expected.abs().max()


def test_pack_int32_equals_compressed_tensors_for_every_width():
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    for bits in range(1, 9):
        for cols in (1, 31, 32, 33, 70):
            codes = torch.randint(0, 2**bits, (5, cols), dtype=torch.uint8)
            signed = (codes.to(torch.int16) - 2 ** (bits - 1)).to(torch.int8)
            assert torch.equal(pack_int32(codes, bits), pack_to_int32(signed, bits))
            assert torch.equal(pack_int32(codes.T, bits).T, pack_to_int32(signed, bits, packed_dim=0))


def test_refusals(tiny_llama, tmp_path):
    from slimkit.models import GPT
    from slimkit.models.gpt import GPTConfig

    with pytest.raises(ExportRefused, match="no quantized layer"):
        slimkit.export(copy.deepcopy(tiny_llama), tmp_path / "a", to="compressed-tensors")
    nf4 = slimkit.quantize(copy.deepcopy(tiny_llama), WeightQuantConfig("nf4", group_size=32))
    with pytest.raises(ExportRefused, match="nf4, which compressed-tensors cannot store exactly"):
        slimkit.export(nf4, tmp_path / "b", to="compressed-tensors")
    odd = slimkit.quantize(copy.deepcopy(tiny_llama), WeightQuantConfig("int4", group_size=48))
    with pytest.raises(ExportRefused, match="groups that divide the input width"):
        slimkit.export(odd, tmp_path / "c", to="compressed-tensors")
    with pytest.raises(ExportRefused, match="not a transformers model"):
        slimkit.export(GPT(GPTConfig()), tmp_path / "d", to="compressed-tensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing partial left beside --out


def _compress_with_compressed_tensors(float_model, quantized, config: dict, folder):
    """compressed_tensors' own writer, given slimkit's dequantized weights, scales and zero points."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    apply_quantization_config(float_model, QuantizationConfig.model_validate(config))
    for name, module in quantized.named_modules():
        if isinstance(module, QuantLinear):
            enc, target = module.encoded(), float_model.get_submodule(name)
            target.weight.data = module.dequantized_weight()
            target.weight_scale.data = enc.scales().reshape(target.weight_scale.shape)
            if not enc.symmetric:  # compressed-tensors keeps the zero point signed: unsigned minus 2^(bits-1)
                offset = 2 ** (int(enc.fmt.removeprefix("int")) - 1)
                target.weight_zero_point.data = (enc.zero_point.to(torch.int16) - offset).to(torch.int8)
        elif isinstance(module, Int8Linear):
            codes, scale = weight_codes(module.encoded())
            target = float_model.get_submodule(name)
            target.weight.data = codes.float() * scale[:, None]
            target.weight_scale.data = scale[:, None]
    compressor = ModelCompressor.from_pretrained_model(float_model)
    compressor.compress_model(float_model)
    float_model.save_pretrained(folder)
    compressor.update_config(folder)


def _assert_same_tensors(ours, theirs):
    a, b = load_file(str(ours / "model.safetensors")), load_file(str(theirs / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].view(torch.uint8).equal(b[key].view(torch.uint8)), key


@pytest.mark.slow  # a calibrated method or a 256-wide model: seconds, not milliseconds
def test_gptq_act_order_exports_without_g_idx(tiny_llama, token_ids, tmp_path):
    calib = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, method="gptq", act_order=True), calib=calib)
    slimkit.export(tiny_llama, tmp_path / "ct", to="compressed-tensors")
    # slimkit's act order keeps static groups over the original column order: group k // 32 for column k,
    # what compressed-tensors assumes when no weight_g_idx is stored
    assert not any(key.endswith("weight_g_idx") for key in load_file(str(tmp_path / "ct" / "model.safetensors")))
    assert torch.equal(_logits(_load(tmp_path / "ct"), token_ids), _logits(tiny_llama, token_ids))


def test_w8a8_static_writes_input_scale(tiny_llama, token_ids, tmp_path):
    float_model = copy.deepcopy(tiny_llama)
    calib = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    slimkit.quantize(tiny_llama, ActivationQuantConfig(mode="static"), calib=calib)
    slimkit.export(tiny_llama, tmp_path / "ours", to="compressed-tensors")
    tensors = load_file(str(tmp_path / "ours" / "model.safetensors"))
    layer = tiny_llama.model.layers[0].self_attn.q_proj
    assert torch.equal(tensors["model.layers.0.self_attn.q_proj.input_scale"], layer.act_scale.reshape(1))
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())["quantization_config"]
    _compress_with_compressed_tensors(float_model, tiny_llama, ours, tmp_path / "theirs")
    theirs = json.loads((tmp_path / "theirs" / "config.json").read_text())["quantization_config"]
    assert ours == {**theirs, "version": ours["version"]}
    expected, got = _logits(tiny_llama, token_ids), _logits(_load(tmp_path / "ours"), token_ids)
    # the same int8 weights and calibrated activation scale; compressed-tensors clamps codes to [-128, 127],
    # slimkit to [-127, 127], and its fake quantization rounds in the model dtype: rare one-step differences
    assert (got - expected).abs().max() < 0.03 * expected.abs().max()


def test_encoder_exports_and_loads_with_automodel(tmp_path):
    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=32, dtype="float32")
    model = slimkit.quantize(transformers.BertModel(config).eval(), WeightQuantConfig("int4", group_size=32))
    slimkit.export(model, tmp_path / "ct", to="compressed-tensors")
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "ct").eval()
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a MiniLM-class encoder: the same exact weights, the same hidden states
        assert torch.equal(loaded(input_ids=ids)[0], model(input_ids=ids)[0])
