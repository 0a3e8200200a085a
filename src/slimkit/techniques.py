"""slimkit's own techniques, each registered once in ``slimkit.registry``: its config, the function that
applies it with the data it is given (``registry.Inputs``), and how the command line builds its config.

The recipe steps are registered first, in the order recipes list them.
"""

from __future__ import annotations

from torch import nn

from slimkit.adapters import LoRAConfig
from slimkit.distillation import DistillConfig
from slimkit.lowrank import LowRankConfig
from slimkit.privacy import DPConfig, FederatedConfig
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig
from slimkit.registry import Applied, Inputs, Technique, register
from slimkit.training import TrainConfig


def apply_prune(model: nn.Module, config: PruneConfig, inputs: Inputs) -> Applied:
    from slimkit.pruning import prune

    calib = prune_calibration(model, config, inputs)
    source = inputs.calib or inputs.data
    if config.structured and calib is None and source is not None and not hasattr(model, "example_input"):
        calib = source.calibration(1)  # only to trace the model (a Hugging Face model has no example input)
    return Applied(model, prune(model, config, calib))


def prune_calibration(model: nn.Module, config: PruneConfig, inputs: Inputs) -> list | None:
    """Taylor importance takes gradients, so its calibration batches are labelled training batches."""
    if config.method != "taylor":
        return inputs.calibration(config)
    source = inputs.calib or inputs.data
    batches = source.training_batches(model, 64, seed=config.seed)
    return [batches.next() for _ in range(config.calibration_batches)]


def apply_finetune(model: nn.Module, config: TrainConfig, inputs: Inputs) -> Applied:
    from slimkit.training.finetune import finetune_masked

    # masks of earlier pruning stay applied
    return Applied(model, finetune_masked(model, inputs.training(model, config.seed), config))


def apply_distill(model: nn.Module, config: DistillConfig, inputs: Inputs) -> Applied:
    """Distil ``model`` (the teacher) into ``inputs.student``; returns the student."""
    from slimkit.distillation import distill

    train = inputs.train or TrainConfig()
    student = inputs.student if isinstance(inputs.student, nn.Module) else inputs.student(model)
    teacher = None if config.mode == "self" else model  # self-distillation's teacher is the student's average
    return Applied(student, distill(teacher, student, inputs.training(student, train.seed), config, train))


def apply_factorize(model: nn.Module, config: LowRankConfig, inputs: Inputs) -> Applied:
    from slimkit.lowrank import factorize

    return Applied(model, factorize(model, config))


def apply_quantize(model: nn.Module, config: WeightQuantConfig, inputs: Inputs) -> Applied:
    from slimkit.quantization import quantize

    quantize(model, config, calib=inputs.calibration(config))
    return Applied(model, _choose_paths(model, inputs))


def apply_quantize_activations(model: nn.Module, config: ActivationQuantConfig, inputs: Inputs) -> Applied:
    """Dynamic/static int8 in one pass; QAT as prepare_qat -> train with QATSchedule -> convert."""
    from slimkit.quantization import QATSchedule, convert, prepare_qat, quantize

    if config.mode != "qat":
        return Applied(quantize(model, config, calib=inputs.calibration(config)))
    from slimkit.training import train

    train_config = inputs.train or TrainConfig()
    prepare_qat(model, config)
    result = train(model, inputs.training(model, train_config.seed), train_config, callbacks=[QATSchedule(config)])
    convert(model)
    return Applied(model, result)


def apply_train(model: nn.Module, config: TrainConfig, inputs: Inputs) -> Applied:
    from slimkit.training import train

    result = train(model, inputs.training(model, config.seed), config)
    _choose_paths(model, inputs)  # a QLoRA base is quantized: its fastest execution path too
    return Applied(model, result)


def apply_lora(model: nn.Module, config: LoRAConfig, inputs: Inputs) -> Applied:
    """Adapters injected, then trained with ``inputs.train`` (a QLoRA base then gets its fastest path)."""
    from slimkit.adapters import lora

    lora.inject(model, config)
    return apply_train(model, inputs.train or TrainConfig(), inputs)


def apply_private_train(model: nn.Module, config: DPConfig, inputs: Inputs) -> Applied:
    from slimkit.privacy import make_private

    return Applied(model, make_private(model, None, _examples(inputs), config).train(inputs.train or TrainConfig()))


def apply_federated(model: nn.Module, config: FederatedConfig, inputs: Inputs) -> Applied:
    from slimkit.privacy import federated_average

    return Applied(model, federated_average(model, _examples(inputs), config))


def _examples(inputs: Inputs):
    from slimkit.errors import UserInputError

    if inputs.examples is None:
        raise UserInputError("DP-SGD and federated averaging sample single examples: give (x, y) records")
    return inputs.examples


def _choose_paths(model: nn.Module, inputs: Inputs) -> list | None:
    """Time each quantized layer's execution paths and keep the fastest (None in inputs.paths: leave them)."""
    from slimkit.quantization.paths import choose_paths

    return choose_paths(model, **inputs.paths) if inputs.paths is not None else None


def _is_qat(config: ActivationQuantConfig) -> bool:
    return config.mode == "qat"


# ----- how the command-line verbs' options map to each config -----

def prune_from_args(args) -> PruneConfig:
    method = args.method or ("l1" if args.structured else "magnitude")
    return PruneConfig(sparsity=args.sparsity, method=method, scope=args.scope, nm=args.nm,
                       structured=args.structured, ratio=args.ratio, include=tuple(args.include),
                       exclude=tuple(args.exclude), calibration_batches=args.calib_batches)


def factorize_from_args(args) -> LowRankConfig:
    return LowRankConfig(rank=args.rank, energy=args.energy, param_budget=args.param_budget,
                         include=tuple(args.include), exclude=tuple(args.exclude), conv=args.conv)


def quantize_from_args(args) -> WeightQuantConfig:
    return WeightQuantConfig(
        format=args.weights or "int4", group_size=None if args.per_channel else args.group_size,
        symmetric=not args.asymmetric, method=args.method, double_quant=args.double_quant,
        include=tuple(args.include), exclude=tuple(args.exclude), act_order=args.act_order, embeddings=args.embeddings,
        static_groups=args.static_groups, mse_clip=args.mse_clip, awq_scale=args.awq_scale,
        scale_dtype="float32" if args.fp32_scales else "float16", calibration_batches=args.calib_batches)


def quantize_activations_from_args(args) -> ActivationQuantConfig:
    from slimkit.errors import UserInputError

    weights = args.weights or "int8"
    if not weights.startswith("int"):
        raise UserInputError(f"--activations int8 runs int2..int8 weights, not {weights}; pass --weights int8 or int4")
    return ActivationQuantConfig(
        mode=args.mode, weight_bits=int(weights.removeprefix("int")), observer=args.observer,
        smoothquant=args.smoothquant, outlier_threshold=args.outlier_threshold, include=tuple(args.include),
        exclude=tuple(args.exclude), calibration_batches=args.calib_batches,
        freeze_observers_step=args.qat_steps // 2 if args.mode == "qat" else None)


def distill_from_args(args) -> DistillConfig:
    from slimkit.errors import UserInputError

    pairs = []
    for item in args.features:
        student_name, sep, teacher_name = item.partition(":")
        if not sep:
            raise UserInputError(f"--features {item!r}: write STUDENT_MODULE:TEACHER_MODULE")
        pairs.append((student_name, teacher_name))
    return DistillConfig(temperature=args.temperature, alpha=args.alpha, mode=args.mode, features=tuple(pairs),
                         feature_loss=args.feature_loss, feature_weight=args.feature_weight, relation=args.relation,
                         relation_weight=args.relation_weight, attention_weight=args.attention_weight)


def lora_from_args(args) -> LoRAConfig:
    return LoRAConfig.parse(args.lora)


for _technique in (
        Technique("prune", PruneConfig, apply_prune, recipe=True, patterned=True, from_args=prune_from_args),
        Technique("finetune", TrainConfig, apply_finetune, trains=True, recipe=True),
        Technique("distill", DistillConfig, apply_distill, trains=True, recipe=True, from_args=distill_from_args),
        Technique("factorize", LowRankConfig, apply_factorize, recipe=True, patterned=True,
                  from_args=factorize_from_args),
        Technique("quantize", WeightQuantConfig, apply_quantize, recipe=True, patterned=True,
                  from_args=quantize_from_args),
        Technique("quantize_activations", ActivationQuantConfig, apply_quantize_activations, trains=_is_qat,
                  recipe=True, patterned=True, from_args=quantize_activations_from_args),
        Technique("train", TrainConfig, apply_train, trains=True),
        Technique("lora", LoRAConfig, apply_lora, trains=True, from_args=lora_from_args),
        Technique("private_train", DPConfig, apply_private_train, trains=True),
        Technique("federated", FederatedConfig, apply_federated, trains=True)):
    register(_technique)
