"""slimkit.load of foreign checkpoints (GGUF, compressed-tensors) into QuantLinear layers without
dequantizing: the same logits, and exporting again gives back the same bytes. Corrupt GGUF headers
are one clear error, never a hang or a huge allocation."""

import struct

import pytest
import torch
from safetensors.torch import load_file

import slimkit
from slimkit.cli import main
from slimkit.deployment import ExportRefused
from slimkit.errors import ArtifactError
from slimkit.quantization import WeightQuantConfig
from slimkit.quantization.modules import QuantLinear

pytest.importorskip("transformers")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_gguf_round_trip_keeps_codes_and_bytes(tiny_llama, token_ids, tmp_path, fmt):
    slimkit.quantize(tiny_llama, WeightQuantConfig(fmt, group_size=32))
    first = slimkit.export(tiny_llama, tmp_path / "a", to="gguf") / "model.gguf"
    imported = slimkit.load(first)
    layer = imported.model.layers[0].self_attn.q_proj
    assert isinstance(layer, QuantLinear) and layer.encoded().fmt == fmt  # codes kept, not float weights
    assert torch.equal(_logits(imported, token_ids), _logits(tiny_llama, token_ids))
    second = slimkit.export(imported, tmp_path / "b", to="gguf") / "model.gguf"
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("config", [WeightQuantConfig("int4", group_size=32),
                                    WeightQuantConfig("int3", group_size=32, symmetric=False),
                                    WeightQuantConfig("fp8_e4m3", group_size=None)], ids=["int4", "int3-asym", "fp8"])
def test_compressed_tensors_round_trip_keeps_codes_and_bytes(tiny_llama, token_ids, tmp_path, config):
    slimkit.quantize(tiny_llama, config)
    slimkit.export(tiny_llama, tmp_path / "a", to="compressed-tensors")
    imported = slimkit.load(tmp_path / "a")
    assert isinstance(imported.model.layers[1].mlp.down_proj, QuantLinear)
    assert torch.equal(_logits(imported, token_ids), _logits(tiny_llama, token_ids))
    slimkit.export(imported, tmp_path / "b", to="compressed-tensors")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(a[k].view(torch.uint8).equal(b[k].view(torch.uint8)) for k in a)
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int_quantized_w8a8_round_trip_keeps_codes_and_bytes(tiny_llama, token_ids, tmp_path, mode):
    from slimkit.quantization.activation import ActivationQuantConfig
    from slimkit.quantization.activation.modules import Int8Linear

    calib = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    slimkit.quantize(tiny_llama, ActivationQuantConfig(mode=mode), calib=calib if mode == "static" else None)
    slimkit.export(tiny_llama, tmp_path / "a", to="compressed-tensors")
    imported = slimkit.load(tmp_path / "a")
    layer, original = imported.model.layers[1].mlp.down_proj, tiny_llama.model.layers[1].mlp.down_proj
    assert isinstance(layer, Int8Linear) and layer.mode == original.mode
    assert mode == "static" or layer.granularity == original.granularity == "token"  # dynamic: a scale per token
    # the same int8 codes, weight scales and activation scale: slimkit's own W8A8 computation, bit for bit
    assert torch.equal(_logits(imported, token_ids), _logits(tiny_llama, token_ids))
    slimkit.export(imported, tmp_path / "b", to="compressed-tensors")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(a[k].view(torch.uint8).equal(b[k].view(torch.uint8)) for k in a)
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()


def test_config_that_disagrees_with_tensors_is_refused(tiny_llama, tmp_path):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32))
    folder = slimkit.export(tiny_llama, tmp_path / "a", to="compressed-tensors")
    text = (folder / "config.json").read_text().replace('"group_size": 32', '"group_size": 16')
    (folder / "config.json").write_text(text)
    with pytest.raises(ArtifactError, match="weight_scale .* disagrees with quantization_config"):
        slimkit.load(folder)


def _header(tensors: int, kvs: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs)


@pytest.mark.parametrize("content, message", [
    (b"GGML" + bytes(20), "no 'GGUF' magic"),
    (b"GGUF" + struct.pack("<IQQ", 7, 0, 0), "version 7"),
    (_header(2**62, 0), "more than its .* bytes can hold"),  # a huge count is refused before any loop
    (_header(0, 1) + struct.pack("<Q", 2**40) + b"key", "runs past the end"),  # a string longer than the file
    (_header(0, 0)[:12], "runs past the end"),  # truncated inside the header
])
def test_corrupt_gguf_header_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=message):
        slimkit.load(path)


def test_gguf_of_another_architecture_is_refused_on_the_command_line(tiny_llama, tmp_path, capsys):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32))
    path = slimkit.export(tiny_llama, tmp_path / "a", to="gguf") / "model.gguf"
    data = bytearray(path.read_bytes())
    at = data.index(b"llama", data.index(b"general.architecture"))
    data[at:at + 5] = b"gpt2x"
    (tmp_path / "other.gguf").write_bytes(bytes(data))
    capsys.readouterr()  # the quantization's progress lines
    assert main(["export", str(tmp_path / "other.gguf"), "--to", "onnx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "architecture 'gpt2x'; slimkit imports the llama family only" in err


def test_quantized_embeddings_travel_as_q4_0_blocks(tiny_llama, token_ids, tmp_path):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, embeddings=True))
    first = slimkit.export(tiny_llama, tmp_path / "a", to="gguf") / "model.gguf"
    gguf = pytest.importorskip("gguf")
    assert {t.name: t.tensor_type.name for t in gguf.GGUFReader(first).tensors}["token_embd.weight"] == "Q4_0"
    transformers = pytest.importorskip("transformers")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(first.parent, gguf_file=first.name).eval()
    assert torch.equal(_logits(loaded, token_ids), _logits(tiny_llama, token_ids))
    imported = slimkit.load(first)
    assert type(imported.model.embed_tokens).__name__ == "QuantEmbedding"
    assert first.read_bytes() == (slimkit.export(imported, tmp_path / "b", to="gguf") / "model.gguf").read_bytes()


@pytest.fixture
def q4_k_gguf(tmp_path):
    """A GGUF whose Linear layers are Q4_K (llama.cpp's search, ported), the rest float, and its float model."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False, dtype="float32")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    return slimkit.export(model, tmp_path / "q4k", to="gguf", float_layers="q4_k") / "model.gguf"


def test_q4_k_gguf_imports_as_blocks_with_transformers_logits_and_the_same_bytes(q4_k_gguf, token_ids, tmp_path):
    from slimkit.quantization.ggml_layers import GGMLLinear

    transformers = pytest.importorskip("transformers")
    imported = slimkit.load(q4_k_gguf)
    layers = [m for m in imported.modules() if isinstance(m, GGMLLinear)]
    assert len(layers) == 7 + 1  # q, k, v, o, gate, up, down and the output layer: blocks, not float weights
    assert layers[0].blocks.dtype == torch.uint8 and layers[0].blocks.numel() * 8 / (256 * 256) == 4.5
    theirs = transformers.AutoModelForCausalLM.from_pretrained(q4_k_gguf.parent, gguf_file=q4_k_gguf.name).eval()
    with torch.inference_mode():
        # transformers decodes the blocks with the gguf package (float32, the same products): the same logits
        assert torch.equal(imported(token_ids).logits, theirs(token_ids).logits)
    again = slimkit.export(imported, tmp_path / "again", to="gguf") / "model.gguf"
    assert again.read_bytes() == q4_k_gguf.read_bytes()
    slimkit.save(imported, tmp_path / "artifact")
    assert torch.equal(_logits(slimkit.load(tmp_path / "artifact"), token_ids), _logits(imported, token_ids))
    with pytest.raises(ExportRefused, match="holds GGUF Q4_K blocks .* compressed-tensors cannot store"):
        slimkit.export(imported, tmp_path / "ct", to="compressed-tensors")
    with pytest.raises(ExportRefused, match="holds GGUF Q4_K blocks .* ONNX cannot store"):
        slimkit.export(imported, tmp_path / "onnx", to="onnx")
    assert not (tmp_path / "ct").exists() and not (tmp_path / "onnx").exists()


def test_block_embedding_decodes_only_the_rows_it_looks_up_as_gguf_does():
    gguf = pytest.importorskip("gguf")
    from slimkit.formats.q4k import quantize_q4_k
    from slimkit.quantization.ggml_layers import GGMLEmbedding

    table = torch.randn(10, 512, generator=torch.Generator().manual_seed(0))
    blocks = quantize_q4_k(table)
    embedding = GGMLEmbedding(10, 512, blocks, 12)  # 12: Q4_K
    reference = torch.from_numpy(gguf.quants.dequantize(blocks.numpy(), gguf.GGMLQuantizationType.Q4_K).copy())
    index = torch.tensor([[3, 1, 3], [9, 0, 2]])
    assert torch.equal(embedding(index), reference.reshape(10, 512)[index])
    assert embedding.to(torch.bfloat16)(index).dtype == torch.bfloat16


def _write_with_gguf_writer(model, path, types):
    """A GGUF written by the gguf package's own GGUFWriter (not slimkit's writer): each 2-D tensor quantized
    by gguf.quants to ``types[kind]`` (kind: the tensor name's second-to-last part), norms F32."""
    gguf = pytest.importorskip("gguf")
    from slimkit.deployment.gguf import gguf_tensors

    config = model.config
    path.parent.mkdir()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_vocab_size(config.vocab_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"] if getattr(config, "rope_parameters", None)
                              else config.rope_theta)
    writer.add_tokenizer_model("gpt2")  # a made-up vocabulary: the file's own, to be carried through an import
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list([f"t{i}" for i in range(config.vocab_size)])
    writer.add_token_types([1] * config.vocab_size)
    writer.add_bos_token_id(1)
    for name, (data, _, _) in gguf_tensors(model).items():
        values = data.detach().float().numpy()
        kind = types.get(name.split(".")[-2]) if values.ndim == 2 else None
        if kind is None:
            writer.add_tensor(name, values)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_writers_q4_1_q5_0_q5_1_and_tied_q8_0_file_imports_as_blocks(tiny_llama, token_ids, tmp_path):
    # SmolLM2's shipped GGUF is this mix: Q4_1 projections and a tied Q8_0 embedding table
    from slimkit.quantization.ggml_layers import GGMLEmbedding, GGMLLinear

    transformers = pytest.importorskip("transformers")
    tiny_llama.config.tie_word_embeddings = True
    tiny_llama.tie_weights()
    types = {"attn_q": "Q4_1", "attn_k": "Q5_0", "attn_v": "Q5_1", "attn_output": "Q4_1", "ffn_gate": "Q4_1",
             "ffn_up": "Q5_0", "ffn_down": "Q5_1", "token_embd": "Q8_0"}
    path = _write_with_gguf_writer(tiny_llama, tmp_path / "theirs" / "model.gguf", types)
    imported = slimkit.load(path)
    assert isinstance(imported.model.embed_tokens, GGMLEmbedding)
    assert imported.lm_head.blocks is imported.model.embed_tokens.blocks  # one table, as llama.cpp keeps it
    assert sum(isinstance(m, GGMLLinear) for m in imported.modules()) == 7 * 2 + 1
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    with torch.inference_mode():
        assert torch.equal(imported(token_ids).logits, theirs(token_ids).logits)  # gguf's decoders, bit for bit
    out = imported.generate(token_ids[:1, :4], max_new_tokens=4, do_sample=False)
    assert torch.equal(out, theirs.generate(token_ids[:1, :4], max_new_tokens=4, do_sample=False))
    from slimkit.deployment.gguf_reader import read_gguf

    meta, infos, data = read_gguf(path)
    meta_again, again, data_again = read_gguf(slimkit.export(imported, tmp_path / "again", to="gguf") / "model.gguf")
    tokenizer = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
    assert len(tokenizer) == 5 and tokenizer == {k: v for k, v in meta_again.items() if k.startswith("tokenizer.")}
    assert sorted(infos) == sorted(again) and all(  # every tensor's bytes, the tied table written once
        data[i.offset:i.offset + i.nbytes] == data_again[again[k].offset:again[k].offset + again[k].nbytes]
        for k, i in infos.items())
    slimkit.save(imported, tmp_path / "artifact")
    loaded = slimkit.load(tmp_path / "artifact")
    assert loaded.lm_head.blocks is loaded.model.embed_tokens.blocks
    assert torch.equal(_logits(loaded, token_ids), _logits(imported, token_ids))
