"""Recipe parsing: the built-ins, the YAML round trip, and every bad-input message (file, line, field)."""

import pytest

from slimkit.errors import UserInputError
from slimkit.pruning import PruneConfig
from slimkit.quantization import WeightQuantConfig
from slimkit.recipes import RecipeError, builtin_recipes, load_recipe, parse_recipe


def test_builtins_are_listed_and_round_trip_through_yaml():
    assert set(builtin_recipes()) == {"edge-int8", "llm-int4", "sparse-90", "tiny-student"}
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.description
        assert parse_recipe(recipe.to_yaml(), name) == recipe


def test_steps_build_the_technique_configs_and_read_1e_minus_3_as_a_float():
    recipe = parse_recipe("steps:\n  - prune: {sparsity: 0.9, scope: global}\n"
                          "  - finetune: {steps: 5, lr: 1e-3}\n    batch_size: 32\n")
    prune, finetune = recipe.steps
    assert prune.config == PruneConfig(sparsity=0.9, scope="global") and prune.name == "prune"
    assert finetune.config.lr == 1e-3 and finetune.batch_size == 32


def test_overrides_exclude_their_layers_from_the_base_and_run_one_config_each():
    recipe = parse_recipe("steps:\n  - quantize: {format: int4, group_size: 32}\n"
                          "    overrides:\n      'net.4': {format: int8}\n      'net.0': skip\n")
    base, override = recipe.steps[0].configs()
    assert base == WeightQuantConfig("int4", group_size=32, exclude=("net.4", "net.0"))
    assert override == WeightQuantConfig("int8", group_size=32, include=("net.4",))


@pytest.mark.parametrize("text, where, says", [
    ("steps:\n  - prune: {sparsity: 0.9\n", "r.yaml line 3", "not valid YAML"),
    ("steps:\n  - prune:\n      sparsty: 0.9\n", "r.yaml line 3, steps[0].prune.sparsty", "unknown PruneConfig setting"),
    ("steps:\n  - prune:\n      scope: global\n      sparsity: 1.5\n", "r.yaml line 4, steps[0].prune.sparsity",
     "sparsity=1.5 must lie in [0, 1)"),
    ("steps:\n  - quantize: {format: int4}\n  - quantise: {format: int8}\n", "r.yaml line 3, steps[1].quantise",
     "unknown step key"),
    ("steps:\n  - prune: {sparsity: 0.5}\n    quantize: {}\n", "r.yaml line 2, steps[0]", "exactly one technique"),
    ("name: x\n", "r.yaml line 1, steps", "non-empty list of steps"),
    ("steps:\n  - finetune: {steps: 3}\n    overrides: {'net.0': skip}\n", "r.yaml line 3, steps[0].overrides",
     "apply to the whole model"),
    ("steps:\n  - quantize: {}\n    overrides:\n      'net.0': {format: int9}\n",
     "r.yaml line 4, steps[0].overrides['net.0'].format", "unknown format 'int9'"),
    ("steps:\n  - distill: {alpha: 0.9}\n", "r.yaml line 2, steps[0]", "distill steps need student"),
    ("steps:\n  - finetune: {steps: 0}\n", "r.yaml line 2, steps[0].finetune.steps", "steps"),
    ("steps:\n  - prune: {sparsity: 0.5}\n  - prune: {sparsity: 0.6}\n", "r.yaml line 3, steps[1].name", "used twice"),
    ("task: images\nsteps:\n  - prune: {sparsity: 0.5}\n", "r.yaml line 1, task", "unknown task"),
])
def test_an_invalid_recipe_names_the_line_and_the_field(text, where, says):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    assert str(info.value).startswith(where) and says in str(info.value)


def test_an_unknown_recipe_name_lists_the_builtins():
    with pytest.raises(UserInputError, match="edge-int8, llm-int4, sparse-90, tiny-student"):
        load_recipe("no-such-recipe")
