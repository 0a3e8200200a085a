"""The zoo's task registry: the data, metric and calibration behind each reference model's task.

Each task is an object that ``slimkit.evaluation.evaluate`` measures a model with (the protocol is
``slimkit.evaluation.Task``); any object with the same attributes works there too.

- ``digits``: top-1 accuracy on the digits test split; one call classifies a batch of images.
- ``pycorpus``: bits per byte on 256 fixed 128-byte windows of the validation split; one call
  is a forward pass over a full 128-byte context.
- ``minilm``: fidelity of sentence embeddings to the fp32 all-MiniLM-L6-v2 on 400 real
  sentences (mean and min cosine similarity, top-10 nearest-neighbour agreement); one call
  embeds a batch of sentences.
- ``smollm2``: SmolLM2-135M-Instruct against its float model on held-out language-reference prose
  (perplexity, top-1 and greedy agreement; ``slimkit.models.lm_task``); one call is a decode step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.data import digits, embed, eval_windows, minilm, pycorpus, random_windows, sentences
from slimkit.errors import UserInputError
from slimkit.evaluation import EvalRecord, Task
from slimkit.evaluation import evaluate as evaluate_task
from slimkit.models import smollm2
from slimkit.models.gpt import GPT
from slimkit.models.lm_task import smollm2_task
from slimkit.models.mlp import MLP
from slimkit.models.resnet import ResNet
from slimkit.training import GeneratorBatches, random_examples


class DigitsTask:
    name, metric, higher_is_better, default_batch = "digits", "accuracy", True, 64

    @torch.no_grad()
    def quality(self, model: nn.Module) -> dict[str, float]:
        test = digits().test
        return {"accuracy": (model(test.x).argmax(-1) == test.y).float().mean().item()}

    def example_call(self, model: nn.Module, batch_size: int):
        x = digits().test.x[:batch_size]
        return lambda: model(x)

    def calibration(self, batches: int) -> list:
        return list(digits().train.x.split(64))[:batches]

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        train = digits().train
        return random_examples(train.x, train.y, batch_size, seed)


class PyCorpusTask:
    name, metric, higher_is_better, default_batch = "pycorpus", "bits_per_byte", False, 1
    windows, block = 256, 128

    @torch.no_grad()
    def quality(self, model: nn.Module) -> dict[str, float]:
        x, y = eval_windows(pycorpus().val, self.block, self.windows)
        # per-token losses summed in float64, so that the figure does not drift with batch size
        nats = sum(F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="none").double().sum().item()
                   for xb, yb in zip(x.split(32), y.split(32)))
        return {"bits_per_byte": nats / y.numel() / math.log(2)}

    def example_call(self, model: nn.Module, batch_size: int):
        x, _ = eval_windows(pycorpus().val, self.block, batch_size)
        return lambda: model(x)

    def calibration(self, batches: int) -> list:
        generator = torch.Generator().manual_seed(1)
        return [random_windows(pycorpus().train, 8, self.block, generator)[0] for _ in range(batches)]

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        block = getattr(getattr(model, "config", None), "block_size", None)
        if block is None:
            raise UserInputError(f"pycorpus training needs a language model with config.block_size, "
                                 f"not {type(model).__name__}")
        train = pycorpus().train
        return GeneratorBatches(lambda g: random_windows(train, batch_size, block, g), seed)


class MiniLMTask:
    name, metric, higher_is_better, default_batch = "minilm", "cosine_mean", True, 16
    neighbours = 10

    def __init__(self) -> None:
        self.tokenizer = _minilm_reference()[0]

    @torch.no_grad()
    def quality(self, model: nn.Module) -> dict[str, float]:
        tokenizer, reference = _minilm_reference()
        got = embed(model, tokenizer, sentences())  # (N, H), unit rows
        cosine = (got * reference).sum(-1)
        agree = _neighbour_agreement(reference, got, self.neighbours)
        return {"cosine_mean": cosine.mean().item(), "cosine_min": cosine.min().item(),
                f"top{self.neighbours}_agreement": agree}

    def example_call(self, model: nn.Module, batch_size: int):
        batch = self.tokenizer(list(sentences()[:batch_size]), padding=True, return_tensors="pt")
        return lambda: model(**batch)

    def calibration(self, batches: int) -> list:
        """Comment lines of the standard library's training files: real English, not the eval sentences."""
        texts = calibration_sentences(16 * batches)
        return [self.tokenizer(list(texts[i:i + 16]), padding=True, truncation=True, max_length=128,
                               return_tensors="pt") for i in range(0, len(texts), 16)]

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        raise UserInputError("the minilm task has no training objective yet (it measures fidelity to the fp32 "
                             "encoder); fine-tune it from Python with slimkit.train and your own loss_fn")


@lru_cache(maxsize=1)
def _minilm_reference() -> tuple[object, Tensor]:
    """The tokenizer and the fp32 embeddings of the fixed sentences (computed once per process)."""
    reference = minilm()
    return reference.tokenizer, embed(reference.model, reference.tokenizer, sentences())


def _neighbour_agreement(reference: Tensor, got: Tensor, k: int) -> float:
    """Mean overlap of each sentence's k nearest neighbours (self excluded) under both embeddings."""
    def top_k(e: Tensor) -> Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-math.inf)
        return sim.topk(k, dim=-1).indices  # (N, k)

    ref, new = top_k(reference), top_k(got)
    overlap = (ref.unsqueeze(-1) == new.unsqueeze(-2)).any(-1).sum(-1).float()  # (N,)
    return (overlap / k).mean().item()


def calibration_sentences(count: int) -> list[str]:
    """Up to ``count`` distinct '# comment' lines (40-160 characters) from pycorpus's training split."""
    found: dict[str, None] = {}
    for line in bytes(pycorpus().train.numpy()).decode("utf-8", errors="replace").splitlines():
        text = line.strip().lstrip("#").strip()
        if line.strip().startswith("# ") and 40 <= len(text) <= 160 and text.isascii():
            found[text] = None
            if len(found) == count:
                break
    return list(found)


TASKS = {"digits": DigitsTask, "pycorpus": PyCorpusTask, "minilm": MiniLMTask, "smollm2": smollm2_task}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserInputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]()


def is_minilm(model: nn.Module) -> bool:
    """Whether a transformers model has all-MiniLM-L6-v2's architecture (a BERT of 6 layers, width 384)."""
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) == "bert" and config.hidden_size == 384
            and config.num_hidden_layers == 6 and config.vocab_size == 30522)


def infer_task(model: nn.Module) -> str:
    """The task a reference model or MiniLM-like encoder belongs to; error if it cannot tell."""
    if isinstance(model, (MLP, ResNet)):
        return "digits"
    if isinstance(model, GPT):
        return "pycorpus"
    if is_minilm(model):
        return "minilm"
    if getattr(getattr(model, "config", None), "vocab_size", None) == smollm2.VOCAB_SIZE and hasattr(model, "generate"):
        return "smollm2"  # a causal LM with SmolLM2's tokenizer (pruned or distilled variants included)
    raise UserInputError(
        f"cannot tell which task fits a {type(model).__name__}; pass task= one of {', '.join(TASKS)} (a Hugging "
        f"Face model of any architecture: slimkit.models.hf_tasks.hf_task(model, folder))"
    )


def evaluate(model: nn.Module, task: Task | str | None = None, **options) -> EvalRecord:
    """``slimkit.evaluate``: measure ``model`` on a task object, a task named here, or the one inferred for it.

    ``options`` are those of ``slimkit.evaluation.evaluate``.
    """
    task_obj = task if task is not None and not isinstance(task, str) else get_task(task or infer_task(model))
    return evaluate_task(model, task_obj, **options)
