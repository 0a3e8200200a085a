"""Every compressed module type run the ways users run models: no_grad, inference_mode, bf16 autocast,
copy.deepcopy, .to(dtype), state_dict round trips, torch.compile and Hugging Face ``generate``, each
compared with the float model it came from within the technique's bound (issue 23).

Bounds are output SQNR floors (dB of float-output power over the error power) for the layers these
small random-init models have (nn.Linear's uniform init; inputs N(0, 1)):
- int8 weights per channel: error variance step^2/12 with step = max|w|/127 against max|w|^2/3 for the
  uniform weights: 10*log10(4 * 127^2) = 48 dB per layer; two layers and ReLU, ~45 dB; floor 35.
- int8 embedding rows (N(0, 1) init): 45 dB, floor 35.
- int4 groups of 32: 10*log10(4 * 7^2) = 23 dB per layer; floor 15; NF4 (QLoRA base) is close: 15.
- W8A8: weights as int8 plus per-token (dynamic) or calibrated (static) activation codes; a
  Gaussian row's max is ~3 sigma so its step costs 10*log10(12 * 127^2 / 9) = 43 dB; floor 30.
- QAT-converted at 8 bits: the fake-quantized model's own grid, floor 30 (vs the model it trained from).
- 50% magnitude pruning, 2 of 4 structured units removed, rank-8 SVD of 32-wide layers: these change
  the function by design; the bound is against the same model's eager output instead (exact modes)
  and a float model with the same edit (the dense equivalent), floor 60 (float32 reassociation only).
- LoRA over float: the adapter starts at zero (B = 0), so it equals its base: floor 60.
Modes that run the same arithmetic (no_grad, inference_mode, deepcopy, state_dict) must equal the
eager output exactly; bf16 autocast and .to(bfloat16) keep 8 significant bits (rounding ~2^-9 per
value, ~50 dB per rounding, a few roundings per layer): the floor there is min(technique, 25).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimkit import LowRankConfig, PruneConfig, WeightQuantConfig, factorize, lora, prune, quantize
from slimkit.quantization.activation import kernels
from slimkit.quantization.activation.config import ActivationQuantConfig
from slimkit.quantization.activation.qat import prepare_qat
from slimkit.quantization.activation.api import convert

BF16_FLOOR = 25.0


def sqnr_db(got: torch.Tensor, want: torch.Tensor) -> float:
    want, got = want.double(), got.double()
    return float(10 * torch.log10(want.square().sum() / (got - want).square().sum().clamp_min(1e-30)))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


def _x(rows: int = 8) -> torch.Tensor:
    return torch.randn(rows, 64, generator=torch.Generator().manual_seed(1))


def embedding_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(128, 64), nn.ReLU(), nn.Linear(64, 32))


def _token_ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))


def _weight_only(fmt: str, group: int | None, path: str):
    def build(model):
        quantize(model, WeightQuantConfig(fmt, group_size=group))
        for module in model.modules():
            if hasattr(module, "set_path"):
                module.set_path(path)
        return model
    return build


def _w8a8_static(model):
    return quantize(model, ActivationQuantConfig(mode="static", observer="minmax"), calib=[_x(32)])


def _qat(model):
    config = ActivationQuantConfig(mode="qat", weight_bits=8)
    prepare_qat(model, config)
    model.train()
    model(_x(32))  # one observed batch sets the activation ranges
    return convert(model.eval())


def _lora(base: str):
    def build(model):
        lora.inject(model, lora.LoRAConfig(rank=4, targets=("0", "2"), base=base, group_size=32))
        return model
    return build


def _pruned(model):
    prune(model, PruneConfig(sparsity=0.5))
    return model


def _structured(model):
    prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=_x(2))
    return model


def _lowrank(model):
    factorize(model, LowRankConfig(rank=8))
    return model


# name: (build the compressed model from a float one, SQNR floor against the float model in dB,
#        whether the float reference is the model itself after compression (edits by design))
CASES = {
    "int8-cached": (_weight_only("int8", None, "cached"), 35.0, False),
    "int8-dequant": (_weight_only("int8", None, "dequant"), 35.0, False),
    "int8-int8pack": (_weight_only("int8", None, "int8pack"), 35.0, False),
    "int4-int4pack": (_weight_only("int4", 32, "int4pack"), 15.0, False),
    "int4-dequant": (_weight_only("int4", 32, "dequant"), 15.0, False),
    # N(0, 1) rows of 64: max ~2.5 sigma, 10*log10(12 * 127^2 / 2.5^2) = 45 dB
    "quant-embedding": (lambda m: quantize(m, WeightQuantConfig("int8", group_size=None, embeddings=True,
                                                                include=("0",))), 35.0, False),
    "w8a8-dynamic": (lambda m: quantize(m, ActivationQuantConfig()), 30.0, False),
    "w8a8-static": (_w8a8_static, 30.0, False),
    "qat-int8": (_qat, 30.0, False),
    "pruned-50%": (_pruned, 60.0, True),
    "structured-50%": (_structured, 60.0, True),
    "lowrank-r8": (_lowrank, 60.0, True),
    "lora": (_lora("float"), 60.0, False),
    "qlora-nf4": (_lora("nf4"), 15.0, False),
}


def _fresh_copy_loaded(model: nn.Module, build) -> nn.Module:
    """The same compression of a differently initialised float model, then the state_dict loaded into it
    (stale caches or kernel layouts would show). An unstructured mask is chosen from the weights and is
    not part of the state (non-persistent by design), so that state loads into the same pruning of the
    same float model instead."""
    other = build(_float_model(build, seed=0 if build is _pruned else 1))
    other.load_state_dict(model.state_dict())
    return other.eval()


def _run(model: nn.Module, x: torch.Tensor, mode: str, build) -> torch.Tensor:
    if mode == "no_grad":
        with torch.no_grad():
            return model(x)
    if mode == "inference_mode":
        with torch.inference_mode():
            return model(x).clone()
    if mode == "deepcopy":
        return copy.deepcopy(model)(x)
    if mode == "state_dict":
        return _fresh_copy_loaded(model, build)(x)
    if mode == "autocast_bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)
    if mode == "to_bf16":
        out = copy.deepcopy(model).to(torch.bfloat16)(x if x.dtype == torch.long else x.bfloat16())
        assert out.dtype == torch.bfloat16  # the model really runs in the dtype it was moved to
        return out
    raise AssertionError(mode)


def _float_model(build, seed: int = 0) -> nn.Module:
    return embedding_mlp(seed) if build is CASES["quant-embedding"][0] else mlp(seed)


EXACT_MODES = ("no_grad", "inference_mode", "deepcopy", "state_dict")
BF16_MODES = ("autocast_bf16", "to_bf16")


@pytest.mark.parametrize("mode", EXACT_MODES + BF16_MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_run_mode(case, mode):
    build, floor, edits = CASES[case]
    x = _token_ids() if case == "quant-embedding" else _x()
    model = build(_float_model(build)).eval()
    eager = model(x).detach()
    reference = eager if edits else _float_model(build)(x).detach()
    assert sqnr_db(eager, reference) >= floor
    got = _run(model, x, mode, build).detach()
    if mode in EXACT_MODES:
        assert torch.equal(got, eager)  # the same arithmetic on the same values
    else:
        assert sqnr_db(got.float(), reference) >= min(floor, BF16_FLOOR)


def _compiler() -> str | None:
    import shutil

    return next((cc for cc in ("g++", "c++", "clang++") if shutil.which(cc)), None)


@pytest.mark.slow
@pytest.mark.skipif(_compiler() is None, reason="torch.compile (inductor) needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("case", ["w8a8-dynamic"])  # one case: compiling takes 10-25 s each on 2 cores
def test_torch_compile(case):
    # compiled kernels may fuse and reorder float32 sums: equal to the eager output to float32 rounding
    # (a 64-term dot product: ~sqrt(64) * 6e-8 relative), and within the technique's bound of the float model
    build, floor, _ = CASES[case]
    x = _x()
    model = build(mlp()).eval()
    torch._dynamo.reset()
    with torch.no_grad():
        eager, got = model(x), torch.compile(model)(x)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    assert sqnr_db(got, mlp()(x).detach()) >= floor


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


GENERATE = {  # weight/activation quantization of every Linear but lm_head; floors as in CASES, one layer deeper
    "int8": (WeightQuantConfig("int8", group_size=None, exclude=("lm_head",)), 30.0),
    "int4-g32": (WeightQuantConfig("int4", group_size=32, exclude=("lm_head",)), 12.0),
    "w8a8-dynamic": (ActivationQuantConfig(exclude=("lm_head",)), 25.0),
}


@pytest.mark.parametrize("case", list(GENERATE))
def test_hugging_face_generate(case):
    """A quantized LlamaForCausalLM generates with its KV cache (one-row steps) exactly what its full
    forward gives on the generated sequence, and its logits stay within the bound of the float model's."""
    config, floor = GENERATE[case]
    model = quantize(_tiny_llama(), config)
    prompt = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        full = model(out.sequences).logits[:, prompt.shape[1] - 1:-1]
        float_logits = _tiny_llama()(out.sequences).logits[:, prompt.shape[1] - 1:-1]
    steps = torch.stack(out.logits, 1)  # (batch, new tokens, vocab)
    assert out.sequences.shape == (2, 11)
    # cached steps and the full forward multiply different row counts (another kernel, another sum order)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)
    assert sqnr_db(full, float_logits) >= floor
