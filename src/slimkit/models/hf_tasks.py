"""Tasks for Hugging Face models of any architecture, measured against their own float model.

The model's kind (``slimkit.hf``) picks the task; each uses the folder's own tokenizer:

- "causal-lm": perplexity on held-out text, top-1 and greedy agreement with the float model
  (``slimkit.models.lm_task.CausalLMTask``). Default text: the language reference that ships with
  Python (``pydoc_data.topics``, split by topic); ``data``: a plain-text file, its first 80% for
  calibration and the rest held out.
- "encoder" (base models and masked LMs): cosine of mean-pooled sentence embeddings to the float
  model's (mean and min). Default sentences: slimkit's 400 docstring lines for evaluation, comment
  lines of the standard library for calibration; ``data``: one sentence per line, the last 20% held out.
- "classifier": agreement of predicted labels with the float model (and accuracy where the data has
  labels); ``data``: JSON lines with "text" and "label", the last 20% held out.

>>> task = hf_task(model, "path/to/llama-folder")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.data import sentences
from slimkit.data.prose import prose
from slimkit.errors import UserInputError
from slimkit.hf import float_source, load_folder, load_tokenizer, model_kind
from slimkit.models import lm_task
from slimkit.models.lm_task import CausalLMTask
from slimkit.models.tasks import TASKS, calibration_sentences, get_task, infer_task, is_minilm

HF_TASKS = ("causal-lm", "encoder", "classifier")
HELD_OUT = 0.2  # share of a user's data file kept for evaluation (the rest calibrates)
MAX_LENGTH = 128
# causal LMs: perplexity windows, and greedy prompts x new tokens compared with the float model
WINDOWS, PROMPTS, NEW_TOKENS = 16, 4, 16
MAX_SENTENCES = 400  # sentences an encoder or classifier is measured on


def hf_task(model: nn.Module, folder: str | Path, task: str | None = None, data: str | Path | None = None,
            reference: str | Path | None = None):
    """The task object measuring ``model`` (a transformers model from ``folder``) against its float model.

    ``task`` overrides the kind's task (a task that does not fit the model is a UserInputError);
    ``data`` is the user's file; ``reference`` the float model's folder (default: ``folder``).
    """
    kind = model_kind(model)
    if kind is None:
        raise UserInputError(f"{type(model).__name__} is not a Hugging Face model; its tasks are the zoo's "
                             "(slimkit.models.tasks)")
    fits = _fitting(kind)
    task = task or fits
    if task != fits:
        raise UserInputError(f"task {task!r} does not fit a {type(model).__name__} ({kind}); use --task {fits}")
    tokenizer = load_tokenizer(folder)
    source = Path(reference or folder)
    float_model = lambda: load_folder(source)  # noqa: E731  loaded when first measured
    if task == "causal-lm":
        return _causal_lm(tokenizer, float_model, model, data)
    calibration, evaluation, labels = _sentences(task, data)
    cls = EncoderTask if task == "encoder" else ClassifierTask
    return cls(tokenizer, float_model, calibration, evaluation, labels)


def cli_task(model: nn.Module, model_dir: str | Path, task: str | None = None, data: str | Path | None = None):
    """The task the command line measures a model loaded from MODEL_DIR with (``--task``, ``--data``).

    slimkit's reference models take the zoo's tasks; a Hugging Face model (a folder, or an artifact
    made from one, which records its float folder as ``metrics.source``) takes ``hf_task``, or the
    zoo's task that ``infer_task`` recognises it for (all-MiniLM-L6-v2, SmolLM2).
    """
    kind = model_kind(model)
    if kind is None:
        if task in HF_TASKS or data is not None:
            what = f"--task {task}" if task in HF_TASKS else "--data"
            raise UserInputError(f"{what} is for Hugging Face models; a {type(model).__name__} takes --task "
                                 f"{infer_task(model)}")
        return get_task(task or infer_task(model))
    if task is None and data is None:
        try:
            return get_task(infer_task(model))  # all-MiniLM-L6-v2 or SmolLM2: the zoo's own tasks
        except UserInputError:
            pass
    if task == "minilm" and not is_minilm(model):
        raise UserInputError(f"task 'minilm' measures all-MiniLM-L6-v2 and does not fit this "
                             f"{type(model).__name__}; use --task {_fitting(kind)}")
    if task in TASKS and task not in HF_TASKS:
        if task in ("digits", "pycorpus"):
            raise UserInputError(f"task {task!r} is for slimkit's reference models and does not fit a "
                                 f"{type(model).__name__} ({kind}); use --task {_fitting(kind)}")
        return get_task(task)
    folder, reference = _folders(Path(model_dir))
    return hf_task(model, folder, task, data, reference)


def _fitting(kind: str) -> str:
    return {"masked-lm": "encoder"}.get(kind, kind)


def _folders(model_dir: Path) -> tuple[Path, Path]:
    """(the folder with the tokenizer, the float model's folder) for a Hugging Face folder or an artifact."""
    source = float_source(model_dir)
    if source is None or not (Path(source) / "config.json").is_file():
        raise UserInputError(f"{model_dir}: the Hugging Face folder this artifact was made from is not recorded or "
                             f"no longer there ({source}); it is measured against that float model")
    return model_dir, Path(source)


def _causal_lm(tokenizer, float_model, model: nn.Module, data: str | Path | None) -> CausalLMTask:
    if data is None:
        calibration, validation = prose().calibration, prose().validation
    else:
        text = _read(data)
        cut = int(len(text) * (1 - HELD_OUT))
        calibration, validation = text[:cut], text[cut:]
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 1024)
    block = min(256, positions // 2)  # the timed decode step needs a prompt of ``context`` tokens as well

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    task = CausalLMTask("causal-lm", float_model, encode, calibration, validation, windows=WINDOWS, block=block,
                        prompts=lm_task.PROMPTS[:PROMPTS], new_tokens=NEW_TOKENS)
    task.context = block
    return task


def _sentences(task: str, data: str | Path | None) -> tuple[list[str], list[str], list[int] | None]:
    """(calibration texts, evaluation texts, evaluation labels or None)."""
    if data is None:
        return calibration_sentences(128), list(sentences()[:MAX_SENTENCES]), None
    if task == "encoder":
        rows = [line.strip() for line in _read(data).splitlines() if line.strip()]
        labels = None
    else:
        records = [_record(line, data, i) for i, line in enumerate(_read(data).splitlines(), 1) if line.strip()]
        rows, labels = [r[0] for r in records], [r[1] for r in records]
    cut = int(len(rows) * (1 - HELD_OUT))
    if cut < 1 or cut == len(rows):
        raise UserInputError(f"{data}: {len(rows)} examples; give at least 2 (20% are held out for evaluation)")
    return rows[:cut], rows[cut:][:MAX_SENTENCES], None if labels is None else labels[cut:][:MAX_SENTENCES]


def _record(line: str, path, number: int) -> tuple[str, int]:
    try:
        row = json.loads(line)
        return str(row["text"]), int(row["label"])
    except (ValueError, KeyError, TypeError):
        raise UserInputError(f"{path}:{number}: expected a JSON object with \"text\" and an integer \"label\"") from None


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot be read as UTF-8 text ({exc})") from None


class _SentenceTask:
    default_batch = 16

    def __init__(self, tokenizer, reference, calibration: list[str], evaluation: list[str],
                 labels: list[int] | None) -> None:
        self.tokenizer, self._reference = tokenizer, reference
        self.calibration_texts, self.texts, self.labels = calibration, evaluation, labels
        self._float = None

    def batches(self, texts: list[str], size: int = 32) -> list[dict]:
        return [self.tokenizer(texts[i:i + size], padding=True, truncation=True, max_length=MAX_LENGTH,
                               return_tensors="pt") for i in range(0, len(texts), size)]

    def float_outputs(self) -> Tensor:
        if self._float is None:
            self._float = self.outputs(self._reference())
        return self._float

    def example_call(self, model: nn.Module, batch_size: int):
        batch = self.batches(self.texts[:batch_size], batch_size)[0]
        return lambda: model(**batch)

    def calibration(self, batches: int) -> list:
        return self.batches(self.calibration_texts, 16)[:batches]

    def training_batches(self, model: nn.Module, batch_size: int, seed: int = 0):
        raise UserInputError(f"the {self.name} task measures fidelity to the float model and has no training "
                             "objective; fine-tune from Python with slimkit.train and your own loss_fn")


class EncoderTask(_SentenceTask):
    """Cosine of mean-pooled, normalised sentence embeddings to the float model's."""

    name, metric, higher_is_better = "encoder", "cosine_mean", True

    @torch.no_grad()
    def outputs(self, model: nn.Module) -> Tensor:
        out = []
        for batch in self.batches(self.texts):
            result = model(**batch, output_hidden_states=True)
            hidden = result.hidden_states[-1].float()  # (B, T, H): a masked LM's too, below its head
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1))
        return torch.cat(out)  # (N, H)

    def quality(self, model: nn.Module) -> dict[str, float]:
        cosine = (self.outputs(model) * self.float_outputs()).sum(-1)
        return {"cosine_mean": cosine.mean().item(), "cosine_min": cosine.min().item()}


class ClassifierTask(_SentenceTask):
    """Agreement of predicted labels with the float model's (and accuracy against the data's labels)."""

    name, metric, higher_is_better = "classifier", "agreement", True

    @torch.no_grad()
    def outputs(self, model: nn.Module) -> Tensor:
        return torch.cat([model(**batch).logits.argmax(-1) for batch in self.batches(self.texts)])  # (N,)

    def quality(self, model: nn.Module) -> dict[str, float]:
        predicted = self.outputs(model)
        figures = {"agreement": (predicted == self.float_outputs()).float().mean().item()}
        if self.labels is not None:
            figures["accuracy"] = (predicted == torch.tensor(self.labels)).float().mean().item()
        return figures
