"""``slimkit demo``: train or load the reference models, apply every technique, measure, report.

Each technique adds its variants to ``VARIANTS`` below: a row suffix, a label, the technique's config
and what the registered technique needs to run (its training, a student). ``apply_variant`` applies
them through ``slimkit.registry``. Variants are cached like the reference models, so a repeat run only
measures. Each variant row is compared with its base model's row.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from slimkit import registry
from slimkit.adapters import LoRAConfig
from slimkit.data import digits
from slimkit.data.minilm import minilm
from slimkit.distillation import DistillConfig
from slimkit.errors import MissingDependencyError
from slimkit.evaluation import EvalRecord
from slimkit.evaluation.report import write_report
from slimkit.io import load, save
from slimkit.machine import machine_line
from slimkit.lowrank import LowRankConfig
from slimkit.models import zoo
from slimkit.models.tasks import evaluate, get_task, infer_task
from slimkit.privacy import DPConfig, FederatedConfig
from slimkit.progress import progress
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig
from slimkit.recipes import Recipe, Step, parse_recipe, run_pipeline
from slimkit.recipes.steps import student_model
from slimkit.training import TrainConfig

BASES = ("mlp", "cnn", "gpt", "minilm", "smollm2")
# SmolLM2's demo rows measure 4 of its task's 16 validation windows and 2 of its 8 prompts, so that the first
# run (which also converts the model) stays within 5 minutes; docs/benchmarks.md has the full task's table
SMOLLM2_DEMO = {"windows": 4, "prompts": 2}


@dataclass(frozen=True)
class Variant:
    """One demo row: ``config`` applied by the registered technique ``step`` (default: the only one
    registered for the config's type), or a Recipe's steps in order.

    train / batch_size / student: what a technique that trains takes (registry.Inputs).
    scratch: start from the base architecture's fresh random weights (a row trained from scratch).
    """

    suffix: str  # row name is "<base>-<suffix>"
    technique: str  # the label in the report
    config: object  # a technique config or a Recipe
    step: str | None = None
    train: TrainConfig | None = None
    batch_size: int = 64
    student: str | None = None
    scratch: bool = False

    def to_dict(self) -> dict:
        return {"step": self.step, "config": self.config.to_dict(), "scratch": self.scratch,
                "train": self.train.to_dict() if self.train else None, "batch_size": self.batch_size,
                "student": self.student}


def apply_variant(model: nn.Module, variant: Variant, base: str) -> nn.Module:
    """``variant`` applied to ``model`` (a copy of the trained ``base``); returns the resulting model."""
    task = get_task(infer_task(model))
    if variant.scratch:  # e.g. DP-SGD: the reference saw these digits without privacy
        model.load_state_dict(zoo.build(base).state_dict())
    if isinstance(variant.config, Recipe):
        return run_pipeline(model, variant.config, measure=False).model
    seed = (variant.train or TrainConfig()).seed
    student = None if variant.student is None else lambda teacher: student_model(teacher, variant.student, seed)
    inputs = registry.Inputs(data=task, train=variant.train, batch_size=variant.batch_size, student=student,
                             examples=digits().train if task.name == "digits" else None)
    return registry.apply(model, variant.step or registry.for_config(variant.config).name, variant.config,
                          inputs).model


# GPTQ/AWQ calibration: 16 batches; MiniLM 8 (its GPTQ row took 33 s of a cold run with 16, and the first
# run must stay under 5 minutes; docs/benchmarks.md measures it with 16).
_QUANT = [
    Variant("int8", "weight-only rtn", WeightQuantConfig("int8", group_size=None, calibration_batches=16)),
    Variant("int4-rtn", "weight-only rtn", WeightQuantConfig("int4", group_size=128, calibration_batches=16)),
    Variant("int4-gptq", "weight-only gptq", WeightQuantConfig("int4", group_size=128, method="gptq",
                                                                calibration_batches=16)),
    Variant("int4-awq", "weight-only awq", WeightQuantConfig("int4", group_size=128, method="awq",
                                                              calibration_batches=16)),
    Variant("nf4-dq", "weight-only rtn", WeightQuantConfig("nf4", group_size=64, double_quant=True,
                                                           calibration_batches=16)),
    Variant("fp8", "weight-only rtn", WeightQuantConfig("fp8_e4m3", group_size=None, calibration_batches=16)),
]
_MLP_RECIPE = zoo.RECIPES["mlp"]
_MLP_TRAINING = TrainConfig(steps=_MLP_RECIPE.steps, lr=_MLP_RECIPE.lr, weight_decay=_MLP_RECIPE.weight_decay,
                            warmup=_MLP_RECIPE.warmup, threads=2)
_MLP = [
    Variant("adamw8bit", "trained with 8-bit AdamW", dataclasses.replace(_MLP_TRAINING, optimizer="adamw8bit"),
            step="train", batch_size=_MLP_RECIPE.batch_size, scratch=True),
    Variant("student-kd", "distilled into a 0.13x MLP", DistillConfig(temperature=4.0, alpha=0.9),
            train=_MLP_TRAINING, batch_size=_MLP_RECIPE.batch_size, student="mlp:hidden=64-32"),
]
_GPT_TRAINING = [
    Variant("qlora", "QLoRA fine-tune (NF4 base + r=8 adapters)",
            LoRAConfig(rank=8, alpha=16, include=("blocks.*",), base="nf4"),
            train=TrainConfig(steps=40, lr=2e-3, warmup=5, threads=2), batch_size=16),
]
_PRIVACY = [
    Variant("dp-eps3", "DP-SGD from scratch, (3, 1e-5)-DP", DPConfig(target_epsilon=3.0, delta=1e-5, steps=100,
                                                                      batch_size=512),
            train=TrainConfig(steps=100, lr=2e-2, clip_grad_norm=None, threads=2), scratch=True),
    Variant("fedavg", "FedAvg from scratch, 10 non-IID clients (alpha 0.3), 10 rounds of 2 local epochs",
            FederatedConfig(clients=10, alpha=0.3, rounds=10, local_epochs=2, lr=0.3), scratch=True),
]
_ACTIVATION_QUANT = {
    "mlp": [Variant("int8-dynamic", "activation int8 dynamic (W8A8)", ActivationQuantConfig())],
    "cnn": [Variant("int8-static", "activation int8 static (W8A8, fused)", ActivationQuantConfig(mode="static")),
            Variant("w4a8-qat", "QAT W4A8, 30 steps",
                    ActivationQuantConfig(mode="qat", weight_bits=4, observer="moving_average",
                                          freeze_observers_step=15),
                    train=TrainConfig(steps=30, lr=1e-3, warmup=5, threads=2), batch_size=64)],
}
_RECIPES = [Variant("recipe-w4-mixed", "recipe: int4 weights (groups of 32), first layer int8", parse_recipe(
    "steps:\n  - quantize: {format: int4, group_size: 32}\n"
    "    overrides: {'net.1': {format: int8, group_size: null}}\n", "demo recipe"))]


def _pruned(prune: PruneConfig, finetune: TrainConfig) -> Recipe:
    """Prune, then fine-tune with the masks kept (batches of 64)."""
    return Recipe((Step("prune", prune, "prune"), Step("finetune", finetune, "finetune", batch_size=64)))


VARIANTS: dict[str, list[Variant]] = {
    "mlp": _MLP + _PRIVACY + _ACTIVATION_QUANT["mlp"] + _RECIPES,
    "cnn": [Variant("tucker2", "low-rank (Tucker-2, 90% energy)", LowRankConfig(energy=0.9)),
            Variant("sparse90", "pruned 90% (global magnitude) + 50 fine-tuning steps", _pruned(
                PruneConfig(sparsity=0.9, scope="global"), TrainConfig(steps=50, lr=1e-3, threads=2))),
            Variant("channels50", "half the channels removed (L1) + 100 fine-tuning steps", _pruned(
                PruneConfig(structured=True, ratio=0.5), TrainConfig(steps=100, lr=1e-3, threads=2)))]
    + _ACTIVATION_QUANT["cnn"],
    "gpt": _QUANT + _GPT_TRAINING + [
        Variant("lowrank-mlp", "low-rank MLPs (SVD, half the weights)",
                LowRankConfig(param_budget=0.5, include=("blocks.*.mlp.*",)))],
    # MiniLM keeps the rows that tell its own story (int4 AWQ/RTN and FP8 are on the GPT rows and in
    # docs/benchmarks.md): its AWQ row alone took 50 s of a first run that must stay under 5 minutes.
    # int8 on MiniLM is shown with its embeddings quantized too (int8-all); Linear-only int8 is in
    # docs/benchmarks.md.
    "minilm": [dataclasses.replace(v, config=dataclasses.replace(v.config, calibration_batches=8))
               for v in _QUANT if v.suffix in ("int4-gptq", "nf4-dq")] + [
        Variant("int8-all", "weight-only rtn (+ embeddings)", WeightQuantConfig("int8", group_size=None,
                                                                                embeddings=True))],
    # a pretrained LLM: the cheapest row that says something (RTN needs no calibration pass)
    "smollm2": [v for v in _QUANT if v.suffix == "int4-rtn"],
}


def run_demo(out_dir: str | Path = "slimkit-report", *, retrain: bool = False, minilm_rows: bool = True,
             smollm2_rows: bool = True, threads: int = 2,
             exports: dict | None = None) -> tuple[list[EvalRecord], dict[str, Path], list[str]]:
    """Run the demo; returns the records, the report files written, and notes on what was skipped.

    ``exports``: a dict to fill with each row's export checks (``deployment.verify``: every target,
    read back by its own reader), written as ``exports.md`` in the report folder."""
    out = Path(out_dir)
    records, skipped = [], []
    left_out = {name for name, wanted in (("minilm", minilm_rows), ("smollm2", smollm2_rows)) if not wanted}
    bases = tuple(b for b in BASES if b not in left_out)
    jobs = [(base, None) for base in bases] + [(b, v) for b in bases for v in VARIANTS.get(b, [])]
    loaded: dict[str, nn.Module] = {}  # each base model is trained or loaded once per run
    missing: set[str] = set()  # pretrained bases whose package is not installed

    def base_model(base: str) -> nn.Module:
        if base not in loaded:
            loaded[base] = minilm().model if base == "minilm" else zoo.reference(base, retrain=retrain)
        return loaded[base]

    with progress(jobs, desc="demo", unit="row") as bar:
        for base, variant in bar:
            name = base if variant is None else f"{base}-{variant.suffix}"
            bar.set_postfix_str(name)
            if base in missing:
                continue
            try:
                model = base_model(base)
            except MissingDependencyError as exc:
                skipped.append(f"{base} skipped: {exc}")
                missing.add(base)
                continue
            destination = out / "artifacts" / name
            if destination.exists():
                shutil.rmtree(destination)
            if variant is None:
                artifact = save(model, destination)
            else:
                artifact = shutil.copytree(_variant_artifact(base, model, variant, retrain), destination)
                model = load(artifact)
            records.append(evaluate(model, _demo_task(base), name=name, artifact_dir=artifact, threads=threads,
                                    technique="baseline" if variant is None else variant.technique,
                                    baseline=None if variant is None else base,
                                    baseline_model=None if variant is None else base_model(base)))
            if exports is not None:
                from slimkit.deployment.verify import export_checks

                exports[name] = export_checks(model, out / "exports" / name)
    paths = write_report(records, out, title="slimkit demo", machine=machine_line(threads))
    if exports:
        from slimkit.deployment.verify import checks_table

        paths["exports.md"] = out / "exports.md"
        paths["exports.md"].write_text(checks_table(exports) + "\n")
    return records, paths, skipped


def _demo_task(base: str):
    """The task the demo measures ``base`` on: its own (None: inferred), SmolLM2's at demo size."""
    return _smollm2_demo_task() if base == "smollm2" else None


@lru_cache(maxsize=1)
def _smollm2_demo_task():
    """Built once per process: the float model's outputs on it are computed once."""
    from slimkit.models.lm_task import PROMPTS, SmolLM2Task

    return SmolLM2Task(windows=SMOLLM2_DEMO["windows"], prompts=PROMPTS[:SMOLLM2_DEMO["prompts"]])


def _variant_artifact(base: str, base_model: nn.Module, variant: Variant, rebuild: bool) -> Path:
    """The cached artifact of ``variant`` applied to a copy of ``base_model``, built if missing."""
    cached = _variant_cache(base, variant)

    def make():
        start = time.perf_counter()
        model = apply_variant(copy.deepcopy(base_model), variant, base)
        return model, {"config": variant.to_dict(), "transform_seconds": round(time.perf_counter() - start, 2)}

    zoo.cached(cached, make, rebuild=rebuild)  # atomic, locked, a bad entry rebuilt
    return cached


def _variant_cache(base: str, variant: Variant) -> Path:
    """Cache folder of a variant; its key covers the base model's cache key and the variant's config."""
    base_key = (zoo.cache_path(base).name if base in zoo.NAMES else zoo.hf_folder(base).name
                if base in zoo.PRETRAINED else f"minilm-torch{torch.__version__}")
    from slimkit import __version__

    described = json.dumps([base_key, variant.suffix, variant.to_dict(), __version__], sort_keys=True)
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return zoo.cache_root() / "variants" / f"{base}-{variant.suffix}-{digest}"
