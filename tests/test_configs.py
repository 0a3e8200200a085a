"""The config vocabulary: one base for to_dict/from_dict with a version, old key names still read."""

import pytest

from slimkit.adapters import LoRAConfig
from slimkit.distillation import DistillConfig
from slimkit.errors import UserInputError
from slimkit.formats import PerChannel, PerGroup, PerTensor
from slimkit.lowrank import LowRankConfig
from slimkit.privacy import DPConfig, FederatedConfig
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig
from slimkit.recipes import RecipeError, parse_recipe
from slimkit.training import TrainConfig

CONFIGS = [WeightQuantConfig(granularity=PerGroup(32), method="gptq"), ActivationQuantConfig(mode="static"),
           PruneConfig(layer_sparsity={"a.*": 0.5}), LowRankConfig(rank=4), TrainConfig(steps=3),
           DistillConfig(features=(("a", "b"),)), DPConfig(noise_multiplier=1.0), FederatedConfig(), LoRAConfig()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips_with_a_version_and_refuses_unknown_keys(config):
    data = config.to_dict()
    assert data["version"] == 1 and type(config).from_dict(data) == config
    with pytest.raises(UserInputError, match=r"unknown .* setting\(s\) bogus; known: "):
        type(config).from_dict({**data, "bogus": 1})
    with pytest.raises(UserInputError, match="config version 99 is newer"):
        type(config).from_dict({**data, "version": 99})


def test_old_key_names_still_load():
    # what slimkit.json and recipe YAML held before config version 1
    old = {"format": "int4", "group_size": 64, "method": "gptq", "calib_samples": 8}
    assert WeightQuantConfig.from_dict(old) == WeightQuantConfig(granularity=PerGroup(64), method="gptq",
                                                                 calibration_batches=8)
    assert WeightQuantConfig.from_dict({"group_size": None}).granularity == PerChannel()
    assert ActivationQuantConfig.from_dict({"mode": "static", "calib_batches": 4}).calibration_batches == 4
    assert WeightQuantConfig(calib_samples=5).calibration_batches == 5  # the old keyword too
    with pytest.raises(UserInputError, match="'calib_samples' is the old name of 'calibration_batches'"):
        WeightQuantConfig.from_dict({"calib_samples": 8, "calibration_batches": 8})
    recipe = parse_recipe("steps:\n  - quantize: {format: int4, group_size: 32, method: gptq, calib_samples: 4}\n"
                          "  - quantize_activations: {mode: static, calib_batches: 2}\n")
    assert recipe.steps[0].config == WeightQuantConfig(granularity=PerGroup(32), method="gptq", calibration_batches=4)
    assert recipe.steps[1].config.calibration_batches == 2
    assert parse_recipe(recipe.to_yaml()) == recipe  # written back in the new vocabulary, read the same


def test_granularity_is_one_value_from_config_to_yaml():
    assert WeightQuantConfig().granularity == PerGroup(128)
    assert WeightQuantConfig(group_size=None).granularity == PerChannel()
    assert WeightQuantConfig(granularity="group:64").to_dict()["granularity"] == "group:64"
    assert WeightQuantConfig(granularity=PerTensor()).to_dict()["granularity"] == "tensor"
    with pytest.raises(UserInputError, match="method='gptq' sweeps scales per row"):
        WeightQuantConfig(granularity=PerTensor(), method="gptq")
    with pytest.raises(UserInputError, match="group_size must be a positive whole number, got 0"):
        WeightQuantConfig(group_size=0)
    with pytest.raises(RecipeError, match="granularity 'rows'"):
        parse_recipe("steps:\n  - quantize: {granularity: rows}\n")


def test_global_scope_refuses_per_layer_targets_it_would_ignore():
    with pytest.raises(UserInputError, match="layer_sparsity sets per-layer targets, which one global threshold"):
        PruneConfig(sparsity=0.5, scope="global", layer_sparsity={"fc.*": 0.9})
