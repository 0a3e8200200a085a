"""Text tasks for causal language models, measured against their float model.

``CausalLMTask`` measures perplexity on fixed windows of validation text (per-token losses summed
in float64), next-token top-1 agreement with the float model on the same positions, and greedy
generation agreement: the share of fixed prompts whose first ``new_tokens`` greedy tokens equal
the float model's. One inference call is one decode step at batch B after a 128-token prompt
(tokens per second = B / latency). ``SmolLM2Task`` is that task on SmolLM2-135M-Instruct with
the language reference's prose (``slimkit.data.prose``): calibration and training windows from
its calibration topics, measured on its validation topics.
"""

from __future__ import annotations

import inspect
import math
from functools import cached_property, lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.data.prose import prose
from slimkit.training import GeneratorBatches

PROMPTS = (
    "The capital of France is",
    "To make a cup of tea, first",
    "The main difference between a list and a tuple in Python is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Photosynthesis is the process by which",
    "A good way to learn a new language is",
    "The year 1969 is remembered because",
)


class CausalLMTask:
    """Perplexity, top-1 and greedy agreement of a causal LM against its float model.

    ``reference`` returns the float model (called once, lazily); ``encode`` turns text into token ids.
    """

    metric, higher_is_better, default_batch = "perplexity", False, 1
    context = 128  # prompt length of the timed decode step

    def __init__(self, name: str, reference: Callable[[], nn.Module], encode: Callable[[str], list[int]],
                 calibration_text: str, validation_text: str, *, prompts: tuple[str, ...] = PROMPTS,
                 windows: int = 32, block: int = 256, new_tokens: int = 32) -> None:
        self.name, self._reference, self.encode = name, reference, encode
        self.calibration_ids = torch.tensor(encode(calibration_text))
        validation_ids = torch.tensor(encode(validation_text))
        # evenly spaced windows over the whole validation text, the same on every run
        starts = torch.linspace(0, len(validation_ids) - block, windows).long()
        self.windows = torch.stack([validation_ids[s:s + block] for s in starts.tolist()])  # (W, block)
        self.prompts = [torch.tensor([encode(p)]) for p in prompts]
        self.new_tokens = new_tokens

    @cached_property
    def _float_outputs(self) -> tuple[Tensor, list[Tensor]]:
        """The float model's next-token choices on the windows and its greedy continuations."""
        model = self._reference()
        return _top1(model, self.windows), [_greedy(model, p, self.new_tokens) for p in self.prompts]

    @torch.no_grad()
    def quality(self, model: nn.Module) -> dict[str, float]:
        float_top1, float_texts = self._float_outputs
        nats, agree = 0.0, 0
        for window, ref in zip(self.windows, float_top1):
            logits = _logits(model, window[None])[0, :-1]  # (T-1, V): predictions of tokens 1..T-1
            # per-token losses summed in float64, so that the figure does not drift with window count
            nats += F.cross_entropy(logits.float(), window[1:], reduction="none").double().sum().item()
            agree += (logits.argmax(-1) == ref).sum().item()
        count = self.windows.shape[0] * (self.windows.shape[1] - 1)
        same = [_greedy(model, p, self.new_tokens).equal(ref) for p, ref in zip(self.prompts, float_texts)]
        return {"perplexity": math.exp(nats / count), "top1_agreement": agree / count,
                f"greedy{self.new_tokens}_agreement": sum(same) / len(same)}

    def example_call(self, model: nn.Module, batch_size: int):
        from transformers import DynamicCache

        prompt = self.calibration_ids[:self.context].expand(batch_size, -1)
        step = self.calibration_ids[self.context:self.context + 1].expand(batch_size, 1)
        # transformers 5.x names the argument `cache`; earlier versions `past_key_values`
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(prompt, use_cache=True, **{key: cache})

        @torch.no_grad()
        def decode_step():
            model(step, use_cache=True, **{key: cache})
            cache.crop(-1)  # drop the new position: every call decodes the same one

        return decode_step

    def calibration(self, batches: int) -> list:
        """``batches`` (4, block) windows of calibration text (seeded, never validation text)."""
        generator = torch.Generator().manual_seed(1)
        return [self._random_windows(4, generator)[0] for _ in range(batches)]

    def held_out_windows(self, count: int) -> Tensor:
        """``count`` (count, block) windows of calibration text with a seed of their own: data for a search's
        proxy measure that neither the validation windows nor ``calibration`` (seed 1) use."""
        return self._random_windows(count, torch.Generator().manual_seed(2))[0]

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        return GeneratorBatches(lambda g: self._random_windows(batch_size, g), seed)

    def _random_windows(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        block = self.windows.shape[1]
        starts = torch.randint(0, len(self.calibration_ids) - block - 1, (count,), generator=generator)
        rows = torch.stack([self.calibration_ids[s:s + block + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]


def _logits(model: nn.Module, ids: Tensor) -> Tensor:
    out = model(ids)
    return getattr(out, "logits", out)


@torch.no_grad()
def _top1(model: nn.Module, windows: Tensor) -> Tensor:
    return torch.stack([_logits(model, w[None])[0, :-1].argmax(-1) for w in windows])  # (W, T-1)


@torch.no_grad()
def _greedy(model: nn.Module, prompt: Tensor, new_tokens: int) -> Tensor:
    """The first ``new_tokens`` greedy tokens after ``prompt`` (no stop at end-of-text)."""
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1]:]


class SmolLM2Task(CausalLMTask):
    """The ``smollm2`` task: SmolLM2-135M-Instruct on the language reference's validation topics."""

    def __init__(self, *, windows: int = 16, block: int = 256, prompts: tuple[str, ...] = PROMPTS) -> None:
        from slimkit.models import smollm2, zoo

        path = zoo.hf_folder("smollm2")
        self.tokenizer = smollm2.load_tokenizer(path)
        text = prose()
        super().__init__("smollm2", lambda: smollm2.load(path)[0], self._encode,
                         text.calibration, text.validation, prompts=prompts, windows=windows, block=block)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@lru_cache(maxsize=1)
def smollm2_task() -> SmolLM2Task:
    """The ``smollm2`` task with its default windows, built once per process (the float model's outputs too)."""
    return SmolLM2Task()
