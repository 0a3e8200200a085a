"""The planner's arithmetic against figures computed by hand from published shapes and papers."""

import math

import pytest

from slimkit.memory import TrainSetup, plan, preset
from slimkit.memory.estimate import block_activations, logit_bytes, optimizer_state_bytes, parameter_bytes

GPT2 = preset("gpt2-1.5b")
S, B, H, L, A = 1024, 32, 1600, 48, 25  # ZeRO's GPT-2 1.5B example: sequence 1K, batch 32


def test_published_parameter_counts():
    # GPT-2 XL 1,557,611,200 (HF gpt2-xl); LLaMA-7B 6,738,415,616; Llama-2-70B 68,976,648,192;
    # Llama-3-8B 8,030,261,248 (the models' safetensors headers)
    assert GPT2.n_params() == 1_557_611_200
    assert preset("llama-7b").n_params() == 6_738_415_616
    assert preset("llama-2-70b").n_params() == 68_976_648_192
    assert preset("llama-3-8b").n_params() == 8_030_261_248


@pytest.mark.parametrize("precision", ["amp-bf16", "amp-fp16"])
def test_mixed_precision_adam_is_16_bytes_per_parameter(precision):
    p = plan(GPT2, TrainSetup(precision=precision, batch=1, seq=1024, device="cuda"))
    assert p.model_states() == 16 * GPT2.n_params()
    # ZeRO: "GPT-2 1.5B ... 24 GB" of model states = 16 bytes x 1.5e9
    assert p.model_states() / GPT2.n_params() * 1.5e9 == 24e9


def test_zero_paper_activation_estimate_by_hand():
    # ZeRO (Rajbhandari et al. 2020, sec. 3.2): 12 x h x b x s x L values, 2 bytes each in fp16
    zero = 12 * H * B * S * L * 2
    assert zero / 1e9 == pytest.approx(60.4, abs=0.05)  # "about 60 GB"
    # checkpointing reduces it "by approximately the square root" (Chen et al.'s sqrt(L) segments):
    # a factor sqrt(48) = 6.9
    checkpointed = zero / math.sqrt(L)
    assert checkpointed / 1e9 == pytest.approx(8.7, abs=0.05)  # "about 8 GB"
    # the planner counts each saved tensor (34 sbh per block with dropout, Korthikanti) instead of 12
    # values; stored per checkpointed block: its bf16 input, 2 sbh
    setup = TrainSetup(precision="bf16", batch=B, seq=S)
    assert block_activations(GPT2, setup).full == pytest.approx(34 * H, abs=2 * 16 + 4 * A)  # + stats and lse
    assert block_activations(GPT2, setup.replace(checkpointing="full")).stored == 2 * H


def test_korthikanti_eager_attention_term():
    setup = TrainSetup(precision="bf16", batch=B, seq=S, attention="eager")
    per_token = block_activations(GPT2, setup).full
    stats = 2 * 8  # two LayerNorms' fp32 mean and 1/std
    assert per_token - stats == pytest.approx(H * (34 + 5 * A * S / H))


def test_sdpa_keeps_34_sbh_and_no_s_squared():
    setup = TrainSetup(precision="bf16", batch=B, seq=S)
    lse, stats = 4 * A, 16  # SDPA's fp32 log-sum-exp per head, LayerNorm stats
    assert block_activations(GPT2, setup).full == 34 * H + lse + stats
    longer = block_activations(GPT2, setup.replace(seq=4 * S)).full
    assert longer == block_activations(GPT2, setup).full  # per token: independent of s


def test_qlora_65b_base_is_about_33_5_gb():
    shape = preset("llama-65b")
    setup = TrainSetup(precision="bf16", lora_rank=64, qlora=True)
    nf4 = shape.block_linear_params() * 4.126953125 / 8
    assert nf4 / 1e9 == pytest.approx(33.4, abs=0.05)
    assert shape.n_params() * 4.126953125 / 8 / 1e9 == pytest.approx(33.7, abs=0.05)  # the paper's "65B x 4.127 bits"
    embeddings_bf16 = 2 * (shape.n_params() - shape.block_linear_params())
    adapters_bf16 = 2 * shape.n_layer * 64 * sum(a + b for a, b in shape.linear_shapes())
    assert parameter_bytes(shape, setup) == pytest.approx(nf4 + embeddings_bf16 + adapters_bf16)


def test_4bit_70b_is_not_65_gb():
    shape = preset("llama-2-70b")
    four_bit = shape.n_params() * 4.126953125 / 8
    assert four_bit / 1e9 == pytest.approx(35.6, abs=0.05)  # half of the quoted 65 GB, not 65 GB
    assert shape.n_params() * 2 / 1e9 == pytest.approx(138.0, abs=0.05)  # 65 GB is neither bf16 nor 4-bit


@pytest.mark.parametrize("precision, per_logit", [("fp32", 12), ("amp-bf16", 12), ("bf16", 6)])
def test_logit_bytes(precision, per_logit):
    assert logit_bytes(GPT2, TrainSetup(precision=precision)) == per_logit * GPT2.vocab


def test_adamw8bit_states_are_about_a_quarter_of_fp32():
    fp32 = optimizer_state_bytes(GPT2, TrainSetup())
    int8 = optimizer_state_bytes(GPT2, TrainSetup(optimizer="adamw8bit"))
    assert int8 / fp32 == pytest.approx(0.25 * (1 + 4 / 256))


def test_peak_is_not_the_sum_of_the_largest_parts():
    p = plan(GPT2, TrainSetup(precision="amp-bf16", batch=8, seq=1024, device="cuda"))
    parts = p.phases
    assert p.peak == max(b["total"] for b in parts.values())
    assert parts["backward (loss)"]["gradients"] == 0  # gradients only appear after the loss's backward
    assert p.peak < p.model_states() + parts["backward (loss)"]["activations"] + parts["backward (loss)"]["logits"]


def test_issue_7_h100_anchor():
    # Issue 7: a 358M GPT at b=8, s=1024 with AMP measured 17.3 GiB on an H100, where 16 bytes/param
    # + 34 sbhL gives 11.7. GPT-2 medium's shape (355M, no dropout) stands in for that model.
    shape = GPT2.replace(name="gpt2-medium", n_layer=24, hidden=1024, n_head=16, intermediate=4096, dropout=False)
    setup = TrainSetup(precision="amp-bf16", batch=8, seq=1024, device="cuda")
    usual = 16 * shape.n_params() + 34 * 1024 * 8 * 1024 * 24
    assert usual / 2**30 == pytest.approx(11.7, abs=0.05)
    assert plan(shape, setup).peak / 2**30 == pytest.approx(17.3, rel=0.10)
