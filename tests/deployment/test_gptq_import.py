"""GPTQ (v1 and v2) and AWQ checkpoints in the Hugging Face layout load as QuantLinear with their own codes.

The checkpoints are written here by a naive packer that follows GPTQModel's and AutoAWQ's layouts
(``pack_block``, AWQ's order map) word by word, from a slimkit asymmetric int4 model; loading them must give
back exactly the same codes, zero points and scales, and so the same logits."""

import json

import pytest
import torch
from safetensors.torch import save_file

import slimkit
from slimkit.errors import ArtifactError
from slimkit.quantization import WeightQuantConfig
from slimkit.quantization.modules import QuantLinear

pytest.importorskip("transformers")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _word(values) -> int:
    word = 0
    for i, v in enumerate(values):
        word |= int(v) << (4 * i)
    return word - (1 << 32) if word >= 1 << 31 else word


def _pack_along_rows(codes: torch.Tensor) -> torch.Tensor:  # (R, C) -> (R/8, C)
    rows = codes.tolist()
    return torch.tensor([[_word([rows[r + i][c] for i in range(8)]) for c in range(len(rows[0]))]
                         for r in range(0, len(rows), 8)], dtype=torch.int32)


def _pack_along_columns(codes: torch.Tensor, order=tuple(range(8))) -> torch.Tensor:  # (R, C) -> (R, C/8)
    return torch.tensor([[_word([row[c + order[i]] for i in range(8)]) for c in range(0, len(row), 8)]
                         for row in codes.tolist()], dtype=torch.int32)


def _write_checkpoint(model, folder, method, v1=True):
    tensors = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            enc = module.encoded()
            codes = slimkit.formats.unpack(enc.codes, 4, enc.numel).reshape(enc.shape).T  # (K, N)
            zeros, scales = enc.zero_point.T, enc.scale.T  # (K/g, N)
            if method == "awq":
                tensors[f"{name}.qweight"] = _pack_along_columns(codes, AWQ_ORDER)
                tensors[f"{name}.qzeros"] = _pack_along_columns(zeros, AWQ_ORDER)
            else:
                tensors[f"{name}.qweight"] = _pack_along_rows(codes)
                tensors[f"{name}.qzeros"] = _pack_along_columns((zeros.int() - int(v1)) & 15)
                tensors[f"{name}.g_idx"] = (torch.arange(enc.shape[1]) // 32).int()
            tensors[f"{name}.scales"] = scales.contiguous()
    for key, value in model.state_dict().items():
        if not key.rpartition(".")[2].startswith("w_") and key.rpartition(".")[0] + ".qweight" not in tensors:
            tensors[key] = value.contiguous()
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    config["quantization_config"] = (
        {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm"} if method == "awq"
        else {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": False,
              "checkpoint_format": "gptq" if v1 else "gptq_v2"})
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("method, v1", [("gptq", True), ("gptq", False), ("awq", False)],
                         ids=["gptq-v1", "gptq-v2", "awq"])
def test_gptq_and_awq_folders_load_with_their_codes(tiny_llama, token_ids, tmp_path, method, v1):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, symmetric=False))
    _write_checkpoint(tiny_llama, tmp_path / "ckpt", method, v1)
    loaded = slimkit.load(tmp_path / "ckpt")
    ours, theirs = tiny_llama.model.layers[1].mlp.down_proj.encoded(), loaded.model.layers[1].mlp.down_proj.encoded()
    assert torch.equal(ours.codes, theirs.codes) and torch.equal(ours.zero_point, theirs.zero_point)
    assert torch.equal(ours.scale, theirs.scale)
    with torch.no_grad():
        assert torch.equal(loaded(token_ids).logits, tiny_llama(token_ids).logits)


def test_desc_act_group_index_is_refused(tiny_llama, tmp_path):
    slimkit.quantize(tiny_llama, WeightQuantConfig("int4", group_size=32, symmetric=False))
    _write_checkpoint(tiny_llama, tmp_path / "ckpt", "gptq")
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.g_idx"
    tensors[key] = tensors[key].flip(0).contiguous()
    save_file(tensors, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ArtifactError, match="outside their contiguous group"):
        slimkit.load(tmp_path / "ckpt")
