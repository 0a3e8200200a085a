"""``slimkit demo``: train or load the reference models, apply every technique, measure, report.

Each technique adds its variants to ``VARIANTS`` below (a row suffix, a label and the technique's
config) and teaches ``apply_variant`` its config type. Variants are cached like the reference models, so a
repeat run only measures. Each variant row is compared with its base model's row.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimkit.adapters import LoRAConfig, lora
from slimkit.data import digits
from slimkit.data.minilm import minilm
from slimkit.distillation import DistillConfig, distill
from slimkit.errors import MissingDependencyError
from slimkit.evaluation import EvalRecord
from slimkit.evaluation.report import write_report
from slimkit.io import load, save
from slimkit.machine import machine_line
from slimkit.lowrank import LowRankConfig, factorize
from slimkit.models import zoo
from slimkit.models.spec import from_spec
from slimkit.models.tasks import evaluate, get_task, infer_task
from slimkit.privacy import DPConfig, FederatedConfig, federated_average, make_private
from slimkit.progress import progress
from slimkit.pruning import PruneConfig
from slimkit.quantization import (ActivationQuantConfig, QATSchedule, WeightQuantConfig, convert, prepare_qat,
                                  quantize)
from slimkit.quantization.paths import choose_paths
from slimkit.recipes import Recipe, parse_recipe, run_pipeline
from slimkit.recipes.prune import PruneRecipe, run_recipe
from slimkit.training import TrainConfig, train

BASES = ("mlp", "cnn", "gpt", "minilm")
# GPTQ/AWQ calibration batches per base. MiniLM's GPTQ row took 33 s of a cold run with 16 (the
# first run must stay under 5 minutes); docs/benchmarks.md measures it with 16.
CALIBRATION_BATCHES = {"minilm": 8}


@dataclass(frozen=True)
class Variant:
    suffix: str  # row name is "<base>-<suffix>"
    technique: str  # the label in the report
    config: object  # a technique config (has to_dict); apply_variant knows what to do with it


@dataclass(frozen=True)
class Training:
    """A row made by training: the base retrained from scratch, or fine-tuned (optionally with LoRA/QLoRA)."""

    train: TrainConfig
    batch_size: int
    lora: LoRAConfig | None = None
    scratch: bool = False

    def to_dict(self) -> dict:
        return {"train": self.train.to_dict(), "batch_size": self.batch_size, "scratch": self.scratch,
                "lora": self.lora.to_dict() if self.lora else None}


@dataclass(frozen=True)
class Distilled:
    """A row made by distilling the trained base (the teacher) into a new, smaller architecture."""

    student: str  # a models.spec string, e.g. "mlp:hidden=64-32"
    distill: DistillConfig
    train: TrainConfig
    batch_size: int

    def to_dict(self) -> dict:
        return {"student": self.student, "distill": self.distill.to_dict(), "train": self.train.to_dict(),
                "batch_size": self.batch_size}


def apply_variant(model: nn.Module, config, base: str) -> nn.Module:
    """Apply one technique config to ``model`` (a copy of the trained ``base``); returns the resulting model."""
    task = get_task(infer_task(model))
    if isinstance(config, Distilled):
        student = from_spec(config.student, seed=config.train.seed)
        distill(model, student, task.training_batches(student, config.batch_size, config.train.seed),
                config.distill, config.train)
        return student
    if isinstance(config, LowRankConfig):
        factorize(model, config)
    elif isinstance(config, WeightQuantConfig):
        batches = CALIBRATION_BATCHES.get(base, 16)
        quantize(model, config, calib=task.calibration(batches) if config.method != "rtn" else None)
        choose_paths(model)
    elif isinstance(config, Training):
        if config.scratch:
            model.load_state_dict(zoo.build(base).state_dict())
        if config.lora:
            lora.inject(model, config.lora)
        train(model, task.training_batches(model, config.batch_size, config.train.seed), config.train)
        choose_paths(model)  # a QLoRA base is a QuantLinear: measure its fastest execution path too
    elif isinstance(config, PruneRecipe):
        run_recipe(model, config)
    elif isinstance(config, DPTraining):  # from scratch: the reference saw these digits without privacy
        model.load_state_dict(zoo.build(base).state_dict())
        make_private(model, None, digits().train, config.dp).train(config.train)
    elif isinstance(config, ActivationQuantConfig):
        quantize(model, config, calib=task.calibration(16) if config.needs_calibration else None)
    elif isinstance(config, QATTraining):
        prepare_qat(model, config.quant)
        train(model, task.training_batches(model, config.batch_size, config.train.seed), config.train,
              callbacks=[QATSchedule(config.quant)])
        convert(model)
    elif isinstance(config, FederatedConfig):
        model.load_state_dict(zoo.build(base).state_dict())
        federated_average(model, digits().train, config)
    elif isinstance(config, Recipe):
        model = run_pipeline(model, config, measure=False).model
    else:
        raise TypeError(f"the demo does not know how to apply a {type(config).__name__}")
    return model


_QUANT = [
    Variant("int8", "weight-only rtn", WeightQuantConfig("int8", group_size=None)),
    Variant("int4-rtn", "weight-only rtn", WeightQuantConfig("int4", group_size=128)),
    Variant("int4-gptq", "weight-only gptq", WeightQuantConfig("int4", group_size=128, method="gptq")),
    Variant("int4-awq", "weight-only awq", WeightQuantConfig("int4", group_size=128, method="awq")),
    Variant("nf4-dq", "weight-only rtn", WeightQuantConfig("nf4", group_size=64, double_quant=True)),
    Variant("fp8", "weight-only rtn", WeightQuantConfig("fp8_e4m3", group_size=None)),
]
_MLP_RECIPE = zoo.RECIPES["mlp"]
_MLP_TRAINING = TrainConfig(steps=_MLP_RECIPE.steps, lr=_MLP_RECIPE.lr, weight_decay=_MLP_RECIPE.weight_decay,
                            warmup=_MLP_RECIPE.warmup, threads=2)
_MLP = [
    Variant("adamw8bit", "trained with 8-bit AdamW", Training(
        dataclasses.replace(_MLP_TRAINING, optimizer="adamw8bit"), _MLP_RECIPE.batch_size, scratch=True)),
    Variant("student-kd", "distilled into a 0.13x MLP", Distilled(
        "mlp:hidden=64-32", DistillConfig(temperature=4.0, alpha=0.9), _MLP_TRAINING, _MLP_RECIPE.batch_size)),
]
_GPT_TRAINING = [
    Variant("qlora", "QLoRA fine-tune (NF4 base + r=8 adapters)", Training(
        TrainConfig(steps=40, lr=2e-3, warmup=5, threads=2), batch_size=16,
        lora=LoRAConfig(rank=8, alpha=16, targets=("blocks.*",), base="nf4"))),
]


@dataclass(frozen=True)
class DPTraining:
    """A row trained from scratch with DP-SGD (slimkit.privacy) on the digits."""

    dp: DPConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return {"dp": self.dp.to_dict(), "train": self.train.to_dict()}


_PRIVACY = [
    Variant("dp-eps3", "DP-SGD from scratch, (3, 1e-5)-DP", DPTraining(
        DPConfig(target_epsilon=3.0, delta=1e-5, steps=100, batch_size=512),
        TrainConfig(steps=100, lr=2e-2, clip_grad_norm=None, threads=2))),
    Variant("fedavg", "FedAvg from scratch, 10 non-IID clients (alpha 0.3), 10 rounds of 2 local epochs",
            FederatedConfig(clients=10, alpha=0.3, rounds=10, local_epochs=2, lr=0.3)),
]


@dataclass(frozen=True)
class QATTraining:
    """A row fine-tuned with quantization-aware training from the trained base, then converted to int8."""

    quant: ActivationQuantConfig
    train: TrainConfig
    batch_size: int

    def to_dict(self) -> dict:
        return {"quant": self.quant.to_dict(), "train": self.train.to_dict(), "batch_size": self.batch_size}


_ACTIVATION_QUANT = {
    "mlp": [Variant("int8-dynamic", "activation int8 dynamic (W8A8)", ActivationQuantConfig())],
    "cnn": [Variant("int8-static", "activation int8 static (W8A8, fused)", ActivationQuantConfig(mode="static")),
            Variant("w4a8-qat", "QAT W4A8, 30 steps", QATTraining(
                ActivationQuantConfig(mode="qat", weight_bits=4, observer="moving_average", freeze_observers_step=15),
                TrainConfig(steps=30, lr=1e-3, warmup=5, threads=2), batch_size=64))],
}
_RECIPES = [Variant("recipe-w4-mixed", "recipe: int4 weights (groups of 32), first layer int8", parse_recipe(
    "steps:\n  - quantize: {format: int4, group_size: 32}\n"
    "    overrides: {'net.1': {format: int8, group_size: null}}\n", "demo recipe"))]
VARIANTS: dict[str, list[Variant]] = {
    "mlp": _MLP + _PRIVACY + _ACTIVATION_QUANT["mlp"] + _RECIPES,
    "cnn": [Variant("tucker2", "low-rank (Tucker-2, 90% energy)", LowRankConfig(energy=0.9)),
            Variant("sparse90", "pruned 90% (global magnitude) + 50 fine-tuning steps", PruneRecipe(
                PruneConfig(sparsity=0.9, scope="global"), TrainConfig(steps=50, lr=1e-3, threads=2))),
            Variant("channels50", "half the channels removed (L1) + 100 fine-tuning steps", PruneRecipe(
                PruneConfig(structured=True, ratio=0.5), TrainConfig(steps=100, lr=1e-3, threads=2)))]
    + _ACTIVATION_QUANT["cnn"],
    "gpt": _QUANT + _GPT_TRAINING + [
        Variant("lowrank-mlp", "low-rank MLPs (SVD, half the weights)",
                LowRankConfig(param_budget=0.5, include=("blocks.*.mlp.*",)))],
    # MiniLM keeps the rows that tell its own story (int4 AWQ/RTN and FP8 are on the GPT rows and in
    # docs/benchmarks.md): its AWQ row alone took 50 s of a first run that must stay under 5 minutes.
    # int8 on MiniLM is shown with its embeddings quantized too (int8-all); Linear-only int8 is in
    # docs/benchmarks.md.
    "minilm": [v for v in _QUANT if v.suffix in ("int4-gptq", "nf4-dq")] + [
        Variant("int8-all", "weight-only rtn (+ embeddings)", WeightQuantConfig("int8", group_size=None,
                                                                                embeddings=True))],
}


def run_demo(out_dir: str | Path = "slimkit-report", *, retrain: bool = False, minilm_rows: bool = True,
             threads: int = 2) -> tuple[list[EvalRecord], dict[str, Path], list[str]]:
    """Run the demo; returns the records, the report files written, and notes on what was skipped."""
    out = Path(out_dir)
    records, skipped = [], []
    bases = BASES if minilm_rows else tuple(b for b in BASES if b != "minilm")
    jobs = [(base, None) for base in bases] + [(b, v) for b in bases for v in VARIANTS.get(b, [])]
    loaded: dict[str, nn.Module] = {}  # each base model is trained or loaded once per run

    def base_model(base: str) -> nn.Module:
        if base not in loaded:
            loaded[base] = minilm().model if base == "minilm" else zoo.reference(base, retrain=retrain)
        return loaded[base]

    with progress(jobs, desc="demo", unit="row") as bar:
        for base, variant in bar:
            name = base if variant is None else f"{base}-{variant.suffix}"
            bar.set_postfix_str(name)
            if base == "minilm" and skipped:
                continue
            try:
                model = base_model(base)
            except MissingDependencyError as exc:
                skipped.append(f"minilm skipped: {exc}")
                continue
            destination = out / "artifacts" / name
            if destination.exists():
                shutil.rmtree(destination)
            if variant is None:
                artifact = save(model, destination)
            else:
                artifact = shutil.copytree(_variant_artifact(base, model, variant, retrain), destination)
                model = load(artifact)
            records.append(evaluate(model, name=name, technique="baseline" if variant is None else variant.technique,
                                    baseline=None if variant is None else base, artifact_dir=artifact,
                                    threads=threads, baseline_model=None if variant is None else base_model(base)))
    paths = write_report(records, out, title="slimkit demo", machine=machine_line(threads))
    return records, paths, skipped


def _variant_artifact(base: str, base_model: nn.Module, variant: Variant, rebuild: bool) -> Path:
    """The cached artifact of ``variant`` applied to a copy of ``base_model``, built if missing."""
    cached = _variant_cache(base, variant)
    if rebuild or not cached.exists():
        model = copy.deepcopy(base_model)
        start = time.perf_counter()
        model = apply_variant(model, variant.config, base)
        save(model, cached, metrics={"config": variant.config.to_dict(),
                                     "transform_seconds": round(time.perf_counter() - start, 2)})
    return cached


def _variant_cache(base: str, variant: Variant) -> Path:
    """Cache folder of a variant; its key covers the base model's cache key and the variant's config."""
    base_key = zoo.cache_path(base).name if base in zoo.NAMES else f"minilm-torch{torch.__version__}"
    from slimkit import __version__

    described = json.dumps([base_key, variant.suffix, variant.config.to_dict(), __version__], sort_keys=True)
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return zoo.cache_root() / "variants" / f"{base}-{variant.suffix}-{digest}"
