import math

import pytest
import torch
from torch import nn

from slimkit.data import digits, sentences
from slimkit.models.tasks import DigitsTask, PyCorpusTask, _neighbour_agreement, get_task, infer_task
from slimkit.models import GPT, MLP
from tests.conftest import needs_minilm


class Oracle(nn.Module):
    """Returns one-hot logits of the true test labels, looked up by image."""

    def forward(self, x):
        test = digits().test
        assert torch.equal(x, test.x)
        return nn.functional.one_hot(test.y, 10).float()


class Uniform(nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, 256)


def test_accuracy_of_an_oracle_is_one():
    assert DigitsTask().quality(Oracle()) == {"accuracy": 1.0}


def test_uniform_byte_model_costs_exactly_eight_bits():
    assert PyCorpusTask().quality(Uniform())["bits_per_byte"] == pytest.approx(8.0, abs=1e-6)


def test_neighbour_agreement_against_a_naive_count():
    ref = nn.functional.normalize(torch.randn(30, 8), dim=-1)
    got = nn.functional.normalize(ref + 0.3 * torch.randn(30, 8), dim=-1)
    naive = []
    for e in (ref, got):
        sims = e @ e.T
        naive.append([set(sorted((j for j in range(30) if j != i), key=lambda j: -sims[i, j])[:5])
                      for i in range(30)])
    expected = sum(len(a & b) / 5 for a, b in zip(*naive)) / 30
    assert _neighbour_agreement(ref, got, 5) == pytest.approx(expected)
    assert _neighbour_agreement(ref, ref, 5) == 1.0


def test_task_inference_and_unknown_task():
    assert infer_task(MLP()) == "digits" and infer_task(GPT()) == "pycorpus"
    with pytest.raises(ValueError, match="pass task= one of digits, pycorpus, minilm"):
        infer_task(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown task 'imagenet'"):
        get_task("imagenet")


@needs_minilm
def test_minilm_fidelity_of_fp32_is_perfect_and_noise_lowers_it():
    from slimkit.data import minilm

    task, model = get_task("minilm"), minilm().model
    perfect = task.quality(model)
    assert perfect["cosine_mean"] == pytest.approx(1.0, abs=1e-6) and perfect["top10_agreement"] == 1.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p) * p.abs().mean())
    noisy = task.quality(model)
    assert noisy["cosine_min"] < 0.9999 and noisy["cosine_mean"] < perfect["cosine_mean"]


@needs_minilm
def test_embedding_ignores_padding():
    from slimkit.data import embed, minilm

    ref = minilm()
    short, long = "Deep copy operation.", sentences()[0]
    alone = embed(ref.model, ref.tokenizer, [short])
    padded = embed(ref.model, ref.tokenizer, [short, long])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)
    assert math.isclose(alone.norm().item(), 1.0, rel_tol=1e-5)


def test_sentences_are_a_fixed_set_of_unique_real_lines():
    s = sentences()
    assert len(s) == 400 == len(set(s)) and all(40 <= len(x) <= 160 for x in s)


def test_evaluation_takes_task_objects_and_slimkit_evaluate_names():
    """evaluation.evaluate measures with the task object it is given; the zoo's names resolve one layer up."""
    import slimkit
    from slimkit import evaluation
    from slimkit.errors import UserInputError
    from slimkit.models.tasks import evaluate

    with pytest.raises(UserInputError, match="needs a task object.*slimkit.evaluate"):
        evaluation.evaluate(MLP(), "digits")
    assert slimkit.evaluate is evaluate
