"""GGUF (llama.cpp): one file, Llama-family tensor names, slimkit's codes as Q8_0 / Q4_0 blocks.

Q8_0 and Q4_0 hold groups of 32 weights with one float16 scale each: slimkit's symmetric int8 and
int4 codes with groups of 32 and float16 scales are these blocks already (Q8_0 stores q, Q4_0 stores
q + 8, slimkit's offset-binary code), so they are written as they are, bit for bit. Every other
tensor (norms, embeddings, layers left in float) is written as F32, F16 or BF16, its own dtype.
Attention q/k rows are permuted as llama.cpp's converter does (readers undo it). The tokenizer of the
folder the model came from is written as llama.cpp's converter writes it (gguf_vocab.py). Anything else
(asymmetric codes, other groups, NF4, AWQ input scales) is refused: writing it would mean requantizing.

Layout (ggml docs/gguf.md, version 3, little-endian): magic, version, tensor and key-value counts,
key-values, tensor infos (name, dims innermost first, type, offset), padding to 32, data.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from slimkit import hf
from slimkit.deployment import ExportRefused
from slimkit.deployment.gguf_vocab import tokenizer_metadata
from slimkit.formats import unpack
from slimkit.formats.ggml import BF16, F16, F32, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0
from slimkit.formats.q4k import QK_K, quantize_q4_k
from slimkit.quantization.embedding import QuantEmbedding
from slimkit.quantization.ggml_layers import GGMLEmbedding, GGMLLinear
from slimkit.quantization.modules import QuantLinear

ALIGNMENT = 32
# llama_ftype "mostly ..." of the dominant type
FILE_TYPES = {F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 8, Q5_1: 9, Q8_0: 7, Q4_K: 14, Q5_K: 16, Q6_K: 18, BF16: 32}
_FLOAT_TYPES = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}
_LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}
_HYPER = {"context_length": "max_position_embeddings", "embedding_length": "hidden_size",
          "block_count": "num_hidden_layers", "feed_forward_length": "intermediate_size",
          "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
          "vocab_size": "vocab_size"}
FILE_NAME = "model.gguf"
GGUF_TOKENIZER = "_slimkit_gguf_tokenizer"  # an imported model's tokenizer.* key-values, typed for _value


def write_gguf(model: nn.Module, directory: Path, float_layers: str | None = None) -> None:
    """``directory``/model.gguf from a transformers Llama-family model (quantized or not).

    ``float_layers="q4_k"`` quantizes the Linear layers still in float (input width a multiple of 256)
    to Q4_K with llama.cpp's weighted search (q4k.py); otherwise they are written as they are.
    """
    if float_layers not in (None, "q4_k"):
        raise ExportRefused(f"float_layers={float_layers!r}: GGUF export can quantize float layers to 'q4_k' only")
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in ("llama", "mistral"):
        raise ExportRefused(f"GGUF export covers Llama-family transformers models; this is a "
                            f"{getattr(config, 'model_type', None) or type(model).__name__}: export it with --to onnx")
    tensors = gguf_tensors(model, float_layers)
    counts: dict[int, int] = {}
    for _, (data, _, kind) in tensors.items():
        counts[kind] = counts.get(kind, 0) + data.numel()
    dominant = max((k for k in counts if k not in (F32,)), key=counts.get, default=F32)
    with open(directory / FILE_NAME, "wb") as f:
        f.write(_header({**_metadata(config, FILE_TYPES[dominant]), **_tokenizer(model)}, tensors))
        for data, _, _ in tensors.values():
            raw = data.contiguous().view(torch.uint8).numpy().tobytes()
            f.write(raw + bytes(-len(raw) % ALIGNMENT))


def gguf_tensors(model: nn.Module, float_layers: str | None = None) -> dict[str, tuple[Tensor, tuple[int, ...], int]]:
    """GGUF name -> (stored bytes or float tensor, logical numpy shape, ggml type), in file order."""
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        gguf_name = gguf_name_of(name)
        if gguf_name is None:
            continue
        coded = isinstance(module, (QuantLinear, QuantEmbedding))  # held as codes: written as Q4_0/Q8_0 blocks
        blocks = isinstance(module, (GGMLLinear, GGMLEmbedding))  # imported ggml blocks: written back as they were
        weight = None if coded or blocks else module.weight
        stored = module.blocks if blocks else weight
        if stored is not None and stored.data_ptr() in seen:  # a tied output layer: llama.cpp reuses token_embd
            continue
        if coded:
            data, kind = _quantized_blocks(name, module)
        elif blocks:
            seen.add(stored.data_ptr())
            data, kind = module.blocks, module.ggml_type
        elif type(module).__module__.startswith("slimkit."):
            raise ExportRefused(f"layer {name!r} is a slimkit {type(module).__name__}, which GGUF cannot hold; "
                                "quantize with WeightQuantConfig int4/int8, group_size=32, symmetric")
        elif float_layers and isinstance(module, nn.Linear) and module.in_features % QK_K == 0:
            seen.add(weight.data_ptr())
            data, kind = quantize_q4_k(weight), Q4_K
        else:
            seen.add(weight.data_ptr())
            data, kind = _float(name, weight.detach())
        if weight is not None:
            shape = tuple(weight.shape)
        else:
            shape = tuple(module.encoded().shape) if coded else _block_layer_shape(module)
        if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            data = data[_qk_rows(shape[0], heads if "attn_q" in gguf_name else kv_heads)]
        if getattr(module, "bias", None) is not None:
            raise ExportRefused(f"layer {name!r} has a bias, which Llama-family GGUF files do not have")
        out[gguf_name] = (data, shape, kind)
    return out


def _block_layer_shape(module: GGMLLinear | GGMLEmbedding) -> tuple[int, int]:
    if isinstance(module, GGMLLinear):
        return module.out_features, module.in_features
    return module.num_embeddings, module.embedding_dim


def gguf_name_of(name: str) -> str | None:
    """The GGUF tensor name of a Llama module name (None for modules without a GGUF tensor)."""
    if name == "model.embed_tokens":
        return "token_embd.weight"
    if name == "model.norm":
        return "output_norm.weight"
    if name == "lm_head":
        return "output.weight"
    parts = name.split(".")
    if len(parts) >= 4 and parts[:2] == ["model", "layers"]:
        suffix = _LAYER_NAMES.get(".".join(parts[3:]))
        return None if suffix is None else f"blk.{parts[2]}.{suffix}.weight"
    return None


def _qk_rows(rows: int, heads: int) -> Tensor:
    """llama.cpp's permutation of q/k rows: per head, the two rotary halves interleaved."""
    return torch.arange(rows).reshape(heads, 2, rows // heads // 2).transpose(1, 2).reshape(-1)


def _float(name: str, weight: Tensor) -> tuple[Tensor, int]:
    if weight.dtype not in _FLOAT_TYPES:
        raise ExportRefused(f"tensor {name!r} is {weight.dtype}, which GGUF has no exact type for; convert to float32")
    return weight, _FLOAT_TYPES[weight.dtype]


def _quantized_blocks(name: str, module: QuantLinear | QuantEmbedding) -> tuple[Tensor, int]:
    """(out, in/32 * block bytes) uint8 rows of Q8_0 or Q4_0 blocks of the layer's own codes."""
    enc = module.encoded()
    out_features, in_features = enc.shape
    input_scale = getattr(module, "input_scale", None)
    fits = (enc.fmt in ("int8", "int4") and enc.symmetric and enc.granularity == "group" and enc.axis == 0
            and enc.group_size == 32 and in_features % 32 == 0 and input_scale is None)
    if not fits:
        raise ExportRefused(f"layer {name!r} ({enc.fmt}, {enc.granularity} {enc.group_size}, "
                            f"{'symmetric' if enc.symmetric else 'asymmetric'}"
                            f"{', AWQ input scale' if input_scale is not None else ''}) has no exact GGUF "
                            "type; quantize with WeightQuantConfig('int4' or 'int8', group_size=32, symmetric=True, "
                            "method='rtn' or 'gptq') for Q4_0 / Q8_0")
    scale = enc.scales()
    half = scale.half()
    if not torch.equal(half.float(), scale):
        raise ExportRefused(f"layer {name!r}: its scales are not float16 values, which Q4_0/Q8_0 store; "
                            "quantize with scale_dtype='float16' (the default) and without double_quant")
    blocks = out_features * in_features // 32
    d = half.reshape(blocks, 1).view(torch.uint8)  # (blocks, 2): the little-endian float16 scale
    if enc.fmt == "int8":  # Q8_0: d, then 32 int8 q (= code - 128)
        codes = unpack(enc.codes, 8, enc.numel).reshape(blocks, 32)
        q = (codes.to(torch.int16) - 128).to(torch.int8).view(torch.uint8)
        return torch.cat([d, q], 1).reshape(out_features, -1), Q8_0
    codes = unpack(enc.codes, 4, enc.numel).reshape(blocks, 32)  # Q4_0: d, then byte j = code j | code j+16 << 4
    return torch.cat([d, codes[:, :16] | (codes[:, 16:] << 4)], 1).reshape(out_features, -1), Q4_0


def _metadata(config, file_type: int) -> dict:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    meta = {"general.architecture": "llama", "general.name": getattr(config, "name_or_path", "") or "slimkit export",
            "general.alignment": ("u32", ALIGNMENT), "general.file_type": ("u32", file_type),
            "general.quantization_version": ("u32", 2),
            "llama.rope.dimension_count": ("u32", head_dim),
            "llama.rope.freq_base": ("f32", float(_rope_theta(config))),
            "llama.attention.layer_norm_rms_epsilon": ("f32", float(config.rms_norm_eps))}
    meta.update({f"llama.{key}": ("u32", int(getattr(config, attr))) for key, attr in _HYPER.items()})
    return meta


def _tokenizer(model: nn.Module) -> dict:
    """The tokenizer's key-values: those of the GGUF file the model was imported from, else from the folder it
    was loaded from; none, with a warning, without either."""
    carried = getattr(model, GGUF_TOKENIZER, None)
    if carried:
        return carried
    folder, _ = hf.provenance(model)
    if folder is None or not (Path(folder) / "tokenizer.json").is_file():
        warnings.warn("no tokenizer.json beside this model: the GGUF has no vocabulary, which transformers "
                      "accepts and llama.cpp refuses; export a model loaded from a folder with its tokenizer")
        return {}
    return tokenizer_metadata(folder, model.config.vocab_size)


def _rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    if parameters.get("rope_type", "default") != "default":
        raise ExportRefused(f"rope scaling {parameters['rope_type']!r} is not written to GGUF by slimkit; "
                            "export a model with plain rotary embeddings")
    return parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


_VALUE = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"), "i32": (5, "<i"),
          "f32": (6, "<f"), "bool": (7, "<?"), "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}  # gguf_type ids
STRING, ARRAY = 8, 9


def _value(value) -> bytes:
    """A key-value's type and payload: a str, ("u32"|"i32"|"f32"|"bool", x), or ("str[]"|"i32[]", list)."""
    if isinstance(value, str):
        return struct.pack("<I", STRING) + _string(value)
    kind, payload = value
    if kind == "str[]":
        return struct.pack("<IIQ", ARRAY, STRING, len(payload)) + b"".join(_string(s) for s in payload)
    if kind.endswith("[]"):
        code, fmt = _VALUE[kind[:-2]]
        return struct.pack(f"<IIQ{len(payload)}{fmt[1]}", ARRAY, code, len(payload), *payload)
    code, fmt = _VALUE[kind]
    return struct.pack("<I", code) + struct.pack(fmt, payload)


def _header(meta: dict, tensors: dict) -> bytes:
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for key, value in meta.items():
        out += [_string(key), _value(value)]
    offset = 0
    for name, (data, shape, kind) in tensors.items():
        out += [_string(name), struct.pack("<I", len(shape)), struct.pack(f"<{len(shape)}Q", *reversed(shape)),
                struct.pack("<IQ", kind, offset)]
        size = data.numel() * data.element_size()
        offset += size + (-size % ALIGNMENT)
    header = b"".join(out)
    return header + bytes(-len(header) % ALIGNMENT)
