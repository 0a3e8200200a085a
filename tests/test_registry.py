"""The technique registry: one registration wires a technique into recipes, the demo and the CLI."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from slimkit import registry
from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.lowrank import LowRankConfig
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig
from slimkit.recipes import parse_recipe
from slimkit.recipes.steps import apply_step
from slimkit.training import TrainConfig


@dataclass(frozen=True)
class ScaleConfig(Config):
    WHAT: ClassVar[str] = "scaling"
    factor: float = 2.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def apply_scale(model, config: ScaleConfig, inputs: registry.Inputs) -> registry.Applied:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(config.factor)
    return registry.Applied(model, "scaled")


@pytest.fixture
def scale_technique():
    technique = registry.register(registry.Technique("scale", ScaleConfig, apply_scale, recipe=True, patterned=True))
    yield technique
    del registry._REGISTRY["scale"]


def test_slimkits_recipe_steps_come_from_the_registry_in_their_order():
    assert list(registry.techniques(recipe=True)) == ["prune", "finetune", "distill", "factorize", "quantize",
                                                       "quantize_activations"]
    assert registry.for_config(LowRankConfig(rank=2)).name == "factorize"
    with pytest.raises(UserInputError, match="TrainConfig is taken by finetune, train; name the technique"):
        registry.for_config(TrainConfig())


def test_a_registered_technique_is_a_recipe_step_at_once(scale_technique):
    recipe = parse_recipe("steps:\n  - scale: {factor: 3.0}\n")
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    assert apply_step(model, recipe.steps[0], task=None, calib=None) is model
    assert torch.equal(model.weight, before * 3)  # x3 is exact in float32 here: no rounding to allow for


def test_a_name_is_registered_once_and_a_config_must_fit(scale_technique):
    with pytest.raises(UserInputError, match="'scale' is already registered"):
        registry.register(scale_technique)
    with pytest.raises(UserInputError, match="technique 'scale' takes a ScaleConfig, not a LowRankConfig"):
        registry.apply(nn.Linear(2, 2), "scale", LowRankConfig(rank=2))
    with pytest.raises(UserInputError, match="unknown technique 'nope'; registered: prune"):
        registry.get("nope")


def test_needing_calibration_is_one_property_of_each_config():
    needs = {WeightQuantConfig(method="rtn"): False, WeightQuantConfig(method="gptq"): True,
             WeightQuantConfig(method="awq"): True, ActivationQuantConfig(): False,
             ActivationQuantConfig(mode="static"): True, ActivationQuantConfig(mode="qat"): False,
             PruneConfig(sparsity=0.5): False, PruneConfig(sparsity=0.5, method="wanda"): True,
             LowRankConfig(rank=2): False, TrainConfig(): False}
    assert {c: registry.needs_calibration(c) for c in needs} == needs


def test_calibration_is_drawn_as_the_config_says_and_missing_data_is_named():
    batches = registry.Batches(tuple(torch.randn(2, 4) for _ in range(5)))
    inputs = registry.Inputs(calib=batches)
    assert len(inputs.calibration(WeightQuantConfig(method="gptq", calibration_batches=3))) == 3
    assert inputs.calibration(WeightQuantConfig()) is None
    with pytest.raises(UserInputError, match="WeightQuantConfig needs calibration data"):
        registry.Inputs().calibration(WeightQuantConfig(method="gptq"))
    with pytest.raises(UserInputError, match="this technique trains: give a task"):
        registry.apply(nn.Linear(2, 2), "train", TrainConfig(steps=1))


def test_qat_trains_and_static_int8_does_not():
    technique = registry.get("quantize_activations")
    assert technique.needs_training(ActivationQuantConfig(mode="qat"))
    assert not technique.needs_training(ActivationQuantConfig(mode="static"))
