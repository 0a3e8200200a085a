"""GPTQ and AWQ checkpoints in the Hugging Face layout (GPTQModel / AutoAWQ) as slimkit QuantLinear layers.

| | GPTQ (``quant_method: gptq``) | AWQ GEMM (``quant_method: awq``) |
|---|---|---|
| qweight | int32 [K*b/32, N], packed along inputs | int32 [K, N/8], packed along outputs, nibble i = column [0,2,4,6,1,3,5,7][i] |
| qzeros | int32 [K/g, N*b/32] along outputs; ``checkpoint_format: gptq`` (v1) stores z - 1 | int32 [K/g, N/8], same interleave, z |
| scales | [K/g, N] | [K/g, N] |

Both dequantize as W[n, k] = scales[k/g, n] * (q[k, n] - z[k/g, n]): slimkit's asymmetric intN with groups of
g along the input, so codes, zero points and scales are copied over (transposed), never dequantized.
A zero point of 2^(b-1) everywhere is a symmetric code. A ``g_idx`` other than k // g (act order with
``desc_act``) puts columns outside their group, which slimkit's layout cannot hold: refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from slimkit.errors import ArtifactError
from slimkit.formats import EncodedTensor, pack
from slimkit.quantization.modules import QuantLinear

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def unpack_rows(words: Tensor, bits: int) -> Tensor:
    """int32 words (R, C) holding 32/bits codes each along dim 0, element i at bits i*bits: (R*32/bits, C) uint8."""
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    codes = (words.to(torch.int64)[:, None, :] >> shifts[None, :, None]) & (2**bits - 1)  # (R, per, C)
    return codes.reshape(-1, words.shape[1]).to(torch.uint8)


def unpack_columns(words: Tensor, bits: int, order: tuple[int, ...] | None = None) -> Tensor:
    """int32 words (R, C) holding codes along dim 1: (R, C*32/bits) uint8; ``order[i]`` is the column of nibble i."""
    codes = unpack_rows(words.T.contiguous(), bits).T  # (R, C*per), nibble-major within each word
    if order is None:
        return codes.contiguous()
    per = 32 // bits
    grouped = codes.reshape(codes.shape[0], -1, per)  # (R, words, nibble)
    return grouped[..., torch.argsort(torch.tensor(order))].reshape(codes.shape[0], -1).contiguous()


def encoded_layer(parts: dict[str, Tensor], quant: dict, layer: nn.Linear, where: str) -> EncodedTensor:
    """The EncodedTensor of one GPTQ or AWQ Linear (``parts``: qweight, qzeros, scales, g_idx)."""
    method, bits = quant.get("quant_method"), int(quant.get("bits", quant.get("w_bit", 4)))
    group = int(quant.get("group_size", quant.get("q_group_size", 128)))
    out_features, in_features = layer.out_features, layer.in_features
    group = in_features if group == -1 else group
    if bits not in (2, 4, 8) or in_features % group or any(k not in parts for k in ("qweight", "qzeros", "scales")):
        raise ArtifactError(f"{where}: {method} layer with {bits} bits, group {group} over {in_features} inputs or "
                            "without qweight/qzeros/scales is not imported (2, 4 or 8 bits, groups dividing K)")
    if method == "awq":
        if bits != 4:
            raise ArtifactError(f"{where}: AWQ GEMM checkpoints are 4-bit; this one says {bits}")
        q = unpack_columns(parts["qweight"], 4, AWQ_ORDER)  # (K, N)
        z = unpack_columns(parts["qzeros"], 4, AWQ_ORDER)  # (K/g, N)
    else:
        q, z = unpack_rows(parts["qweight"], bits), unpack_columns(parts["qzeros"], bits)
        if quant.get("checkpoint_format", "gptq") == "gptq":  # v1 stores z - 1
            z = ((z.to(torch.int16) + 1) & (2**bits - 1)).to(torch.uint8)
        g_idx = parts.get("g_idx")
        if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(in_features) // group):
            raise ArtifactError(f"{where}: g_idx puts columns outside their contiguous group (desc_act), which "
                                "slimkit's group layout cannot hold")
    scale = parts["scales"]
    groups = (in_features // group, out_features)
    if tuple(q.shape) != (in_features, out_features) or tuple(z.shape) != groups or tuple(scale.shape) != groups:
        raise ArtifactError(f"{where}: qweight {tuple(q.shape)}, qzeros {tuple(z.shape)}, scales {tuple(scale.shape)} "
                            f"disagree with a ({out_features}, {in_features}) layer in groups of {group}")
    symmetric = bool((z == 2 ** (bits - 1)).all())
    return EncodedTensor(f"int{bits}", (out_features, in_features), "group", 0, group, symmetric,
                         pack(q.T.contiguous().reshape(-1), bits), scale.T.contiguous(),
                         None if symmetric else z.T.contiguous())


def load_folder(directory: Path) -> nn.Module:
    """A transformers model from a GPTQ or AWQ folder, its quantized Linear layers as QuantLinear."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from slimkit.files import read_safetensors
    from slimkit.untrusted import read_quantized_config

    data, quant = read_quantized_config(directory)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**data)).eval()
    tensors = read_safetensors(directory / "model.safetensors", f"the {quant['quant_method']} folder is incomplete")
    layers = sorted({key.rpartition(".")[0] for key in tensors if key.endswith(".qweight")})
    for name in layers:
        parts = {key.removeprefix(f"{name}."): tensors.pop(key) for key in list(tensors) if key.startswith(f"{name}.")}
        layer = model.get_submodule(name)
        enc = encoded_layer(parts, quant, layer, f"{directory}: layer {name!r}")
        model.set_submodule(name, QuantLinear(layer.in_features, layer.out_features, enc, parts.get("bias")))
    result = model.load_state_dict(tensors, strict=False, assign=True)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied and k.rpartition(".")[0] not in layers]
    if missing or result.unexpected_keys:
        raise ArtifactError(f"{directory / 'model.safetensors'}: tensors missing {missing[:3]} or unexpected "
                            f"{result.unexpected_keys[:3]} for the model config.json describes")
    model.tie_weights()
    return model
