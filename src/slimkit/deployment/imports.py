"""Importing foreign quantized checkpoints into slimkit's modules, keeping their codes (no dequantization).

- a GGUF file (or a folder holding one .gguf): Llama family; Q4_0 / Q8_0 Linear weights become int4 /
  int8 QuantLinear layers with groups of 32 and float16 scales (slimkit's own encoding, so they also
  export to compressed-tensors and ONNX); Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weights and quantized
  tied embeddings become GGMLLinear / GGMLEmbedding layers holding the file's blocks as they are (a tied
  output layer shares the embedding's blocks); F32/F16/BF16 tensors stay as they are;
- a compressed-tensors folder: pack-quantized intN layers (symmetric or not, group or channel) and
  naive-quantized fp8_e4m3 layers become QuantLinear layers, int-quantized (W8A8) layers Int8Linear;
- a GPTQ or AWQ folder (Hugging Face layout, gptq_import.py).

Exporting an imported model to the same target gives back the same tensor bytes. What slimkit's
modules cannot hold without dequantizing (other ggml types such as Q2_K/Q3_K/IQ*, an act-order group
index) is refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from slimkit.deployment.compressed_tensors import load_folder
from slimkit.deployment.gguf import GGUF_TOKENIZER, gguf_name_of
from slimkit.deployment.gguf_reader import TYPE_NAMES, read_gguf
from slimkit.errors import ArtifactError, MissingDependencyError
from slimkit.formats import EncodedTensor, pack
from slimkit.formats.ggml import BF16, BLOCK_TYPES, F16, F32, Q4_0, Q8_0
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.ggml_layers import GGMLEmbedding, GGMLLinear
from slimkit.quantization.modules import QuantLinear

_FLOAT_DTYPES = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}


def importer_for(path: Path):
    """The importer that reads ``path``, or None when it is not a foreign checkpoint slimkit imports."""
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf
    if path.is_dir() and not (path / "slimkit.json").exists():
        if not (path / "config.json").exists() and len(list(path.glob("*.gguf"))) == 1:
            return lambda folder: load_gguf(next(folder.glob("*.gguf")))
        try:
            quant = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
        except (OSError, ValueError, AttributeError):
            return None
        if quant.get("quant_method") == "compressed-tensors":
            return load_folder
        if quant.get("quant_method") in ("gptq", "awq"):
            from slimkit.deployment.gptq_import import load_folder as load_gptq_folder

            return load_gptq_folder
    return None


def load_gguf(path: Path) -> nn.Module:
    """A transformers LlamaForCausalLM holding the GGUF file's tensors (Q4_0/Q8_0 as QuantLinear, the other
    quantized types as GGMLLinear/GGMLEmbedding blocks)."""
    kinds: dict = {}
    meta, infos, data = read_gguf(path, kinds)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ArtifactError(f"{path}: a GGUF of architecture {arch!r}; slimkit imports the llama family only")
    model = _llama(meta, infos, path)
    heads = {"attn_q": model.config.num_attention_heads, "attn_k": model.config.num_key_value_heads}
    names = {gguf_name_of(name): name for name, _ in model.named_modules()}
    optional = {"output.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(n for n in names if n) - set(infos) - optional)
    if missing:
        raise ArtifactError(f"{path}: tensors {missing[:3]} are missing for a Llama of this shape")
    tied = "output.weight" not in infos
    for gguf_name, info in infos.items():
        if gguf_name not in names:
            raise ArtifactError(f"{path}: tensor {gguf_name!r} has no place in a Llama model")
        module = model.get_submodule(names[gguf_name])
        raw = torch.frombuffer(bytearray(data[info.offset:info.offset + info.nbytes]), dtype=torch.uint8)
        kind = gguf_name.split(".")[-2]
        rows = None if kind not in heads else _unpermuted_rows(info.shape[0], heads[kind])
        if info.ggml_type in _FLOAT_DTYPES:
            values = raw.view(_FLOAT_DTYPES[info.ggml_type]).reshape(info.shape)
            module.weight.data = values if rows is None else values[rows]
        elif isinstance(module, nn.Linear) and info.ggml_type in (Q4_0, Q8_0):  # slimkit's own int4/int8 groups
            model.set_submodule(names[gguf_name], QuantLinear(info.shape[1], info.shape[0],
                                                              _encoded_blocks(raw, info, rows)))
        elif isinstance(module, nn.Linear) and info.ggml_type in BLOCK_TYPES:  # the blocks as they are
            blocks = raw.reshape(info.shape[0], -1)
            blocks = blocks if rows is None else blocks[rows].contiguous()
            model.set_submodule(names[gguf_name], GGMLLinear(info.shape[1], info.shape[0], blocks, info.ggml_type))
        elif gguf_name == "token_embd.weight" and not tied and info.ggml_type in (Q4_0, Q8_0):
            model.set_submodule(names[gguf_name], QuantEmbedding(*info.shape, _encoded_blocks(raw, info, None)))
        elif gguf_name == "token_embd.weight" and info.ggml_type in BLOCK_TYPES:
            embedding = GGMLEmbedding(*info.shape, raw.reshape(info.shape[0], -1), info.ggml_type)
            model.set_submodule(names[gguf_name], embedding)
            if tied:  # the output layer reads the same blocks, as llama.cpp does
                model.set_submodule("lm_head", embedding.output_layer())
        else:
            raise ArtifactError(f"{path}: tensor {gguf_name!r} is {TYPE_NAMES[info.ggml_type]}, which slimkit "
                                f"does not import for a {type(module).__name__}; re-quantize the file with "
                                f"llama-quantize to one of {', '.join(sorted(TYPE_NAMES[t] for t in BLOCK_TYPES))}")
    if model.config.tie_word_embeddings and isinstance(model.model.embed_tokens, nn.Embedding):
        model.tie_weights()
    # the vocabulary travels with the model, so that exporting it to GGUF again gives llama.cpp a usable file
    tokenizer = {}
    for key, value in meta.items():
        if key.startswith("tokenizer.") and kinds.get(key) is not None:
            tokenizer[key] = value if kinds[key] == "str" else (kinds[key], value)
    setattr(model, GGUF_TOKENIZER, tokenizer)
    return model.eval()


def _llama(meta: dict, infos: dict, path: Path) -> nn.Module:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        raise MissingDependencyError("importing a GGUF model needs transformers: pip install transformers") from None
    try:
        get = lambda key: meta[f"llama.{key}"]  # noqa: E731
        embed = infos["token_embd.weight"].shape
        config = LlamaConfig(vocab_size=embed[0], hidden_size=get("embedding_length"),
                             intermediate_size=get("feed_forward_length"), num_hidden_layers=get("block_count"),
                             num_attention_heads=get("attention.head_count"),
                             num_key_value_heads=meta.get("llama.attention.head_count_kv", get("attention.head_count")),
                             max_position_embeddings=get("context_length"),
                             rms_norm_eps=get("attention.layer_norm_rms_epsilon"),
                             rope_theta=meta.get("llama.rope.freq_base", 10000.0),
                             head_dim=meta.get("llama.rope.dimension_count"),
                             tie_word_embeddings="output.weight" not in infos, dtype="float32")
    except KeyError as exc:
        raise ArtifactError(f"{path}: metadata {exc} is missing; not a complete llama GGUF file") from None
    return LlamaForCausalLM(config)


def _unpermuted_rows(rows: int, heads: int) -> Tensor:
    """Inverse of llama.cpp's q/k row permutation (gguf.py's _qk_rows)."""
    return torch.arange(rows).reshape(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)


def _encoded_blocks(raw: Tensor, info, rows: Tensor | None) -> EncodedTensor:
    out_features, in_features = info.shape
    blocks = raw.reshape(out_features, in_features // 32, -1)  # (N, K/32, block bytes)
    if rows is not None:
        blocks = blocks[rows]
    scale = blocks[..., :2].contiguous().view(torch.float16)[..., 0]  # (N, K/32)
    if info.ggml_type == Q8_0:
        codes, fmt = (blocks[..., 2:].view(torch.int8).to(torch.int16) + 128).to(torch.uint8), "int8"
    else:
        packed = blocks[..., 2:]
        codes, fmt = torch.cat([packed & 15, packed >> 4], -1), "int4"  # low nibbles: values 0-15, high: 16-31
    bits = 8 if fmt == "int8" else 4
    return EncodedTensor(fmt, (out_features, in_features), "group", 0, 32, True, pack(codes.reshape(-1), bits),
                         scale.contiguous(), None)


def load_compressed_tensors(directory: Path) -> nn.Module:
    """A transformers model from a compressed-tensors folder, its quantized layers as QuantLinear."""
    from slimkit.deployment.compressed_tensors import load_folder

    return load_folder(directory)
