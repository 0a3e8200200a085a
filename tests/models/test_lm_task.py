"""The causal-LM task's metrics against a naive computation on a tiny random Llama (byte tokens)."""

import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from slimkit.data.prose import prose  # noqa: E402
from slimkit.models.lm_task import CausalLMTask  # noqa: E402


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval()


def byte_task(reference):
    text = prose()
    return CausalLMTask("bytes", lambda: reference, lambda s: list(s.encode()), text.calibration[:4000],
                        text.validation[:3000], prompts=("The capital of", "def f(x):"), windows=3, block=24,
                        new_tokens=6)


def naive_greedy(model, prompt, new_tokens):
    """Argmax of a full forward pass per new token (no cache)."""
    ids = prompt
    for _ in range(new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, prompt.shape[1]:]


@torch.no_grad()
def test_metrics_equal_naive_computation():
    reference = tiny_llama()
    other = copy.deepcopy(reference)
    for p in other.parameters():
        p.add_(0.3 * p.std() * torch.randn_like(p))  # another model: some choices differ, some agree
    task = byte_task(reference)
    got = task.quality(other)
    nll, agree, count = 0.0, 0, 0
    for window in task.windows:
        ref_logits, logits = reference(window[None]).logits[0].double(), other(window[None]).logits[0].double()
        for t in range(len(window) - 1):
            row = logits[t]
            nll += math.log(sum(math.exp(v - row.max().item()) for v in row.tolist())) + row.max().item() \
                - row[window[t + 1]].item()
            agree += int(row.argmax() == ref_logits[t].argmax())
            count += 1
    same = [naive_greedy(other, p, 6).equal(naive_greedy(reference, p, 6)) for p in task.prompts]
    # float32 logits summed in float64 against an all-float64 sum over 69 tokens: ~1e-6 relative at most
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert got["top1_agreement"] == agree / count  # counts of identical argmax choices: exact
    assert got["greedy6_agreement"] == sum(same) / len(same)
    assert 0 < agree < count  # the perturbed model is neither identical nor unrelated


@torch.no_grad()
def test_float_model_agrees_with_itself_and_windows_avoid_calibration_text():
    reference = tiny_llama()
    task = byte_task(reference)
    got = task.quality(reference)
    assert got["top1_agreement"] == 1.0 and got["greedy6_agreement"] == 1.0
    assert task.windows.shape == (3, 24)
    calib = task.calibration(2)
    assert [c.shape for c in calib] == [(4, 24), (4, 24)]
    assert all(task.calibration(2)[i].equal(calib[i]) for i in range(2))  # seeded
    x, y = task.training_batches(reference, 5).next()
    assert x.shape == (5, 24) and x[:, 1:].equal(y[:, :-1])


@torch.no_grad()
def test_decode_step_reuses_the_same_position():
    reference = tiny_llama()
    task = byte_task(reference)
    task.context = 16
    step = task.example_call(reference, 2)
    step()
    step()  # a second call decodes the same position again instead of growing the cache
    prose_split = prose()
    assert not set(prose_split.topics["calibration"]) & set(prose_split.topics["validation"])


def test_a_causal_lm_with_smollm2s_vocabulary_gets_the_smollm2_task():
    from slimkit.models.tasks import infer_task

    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    assert infer_task(transformers.LlamaForCausalLM(config)) == "smollm2"
