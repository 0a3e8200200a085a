"""The accuracy-budget search: resumable Optuna study, a recipe that reproduces the result, budget errors."""

import pytest
import torch

pytest.importorskip("optuna")

from slimkit.io import load  # noqa: E402
from slimkit.models import MLP  # noqa: E402
from slimkit.recipes import load_recipe, parse_recipe, run_pipeline  # noqa: E402
from slimkit.recipes.search import BudgetNotMet, SearchConfig, search  # noqa: E402
from slimkit.recipes.space import apply_proxy, layer_space  # noqa: E402
from slimkit.training import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def mlp():
    """A briefly trained digits MLP (about 90% accurate), so that quality drops mean something."""
    from slimkit.models.tasks import get_task

    torch.manual_seed(0)  # a module fixture is built before the autouse seed of the test that first needs it
    model = MLP()
    train(model, get_task("digits").training_batches(model, 64), TrainConfig(steps=60, lr=3e-3, threads=2))
    return model.eval()


@pytest.mark.parametrize("choice, method", [({"net.1": "int4", "net.3": "sparse90"}, "rtn"),
                                            ({"net.1": "channels25", "net.3": "int4", "net.5": "lowrank50"}, "rtn"),
                                            ({"net.1": "int3", "net.3": "int8"}, "gptq")])
def test_the_byte_estimate_matches_the_saved_artifact(mlp, tmp_path, choice, method):
    """The proxy's bytes against the weights file of the real artifact of the same choice."""
    from slimkit.models.tasks import get_task

    space = layer_space(mlp, method=method, calib=get_task("digits").calibration(8) if method == "gptq" else ())
    _, estimate = apply_proxy(mlp, choice, space)
    import copy

    from slimkit.recipes.space import choice_recipe

    result = run_pipeline(copy.deepcopy(mlp), choice_recipe(choice, space), tmp_path, measure=False,
                          measure_paths=False)
    real = (tmp_path / "model" / "model.safetensors").stat().st_size  # slimkit.json, the metadata, is left out
    assert abs(real - estimate) < 0.03 * real and result.model is not None


def test_an_untied_embedding_table_is_searched_with_bit_widths(tmp_path):
    """A GPT's position table gets bit widths only (its token table is tied to lm_head and stays out)."""
    import copy

    from slimkit.models import from_spec
    from slimkit.recipes.space import choice_recipe

    gpt = from_spec("gpt:n_layer=1,n_embd=64")
    space = layer_space(gpt)
    assert space.embeddings == ("wpe",) and "wte" not in space.layers
    assert space.layers["wpe"] == ("float", "int8", "int4", "int3", "int2")
    choice = {"wpe": "int4", "blocks.0.mlp.0": "int8"}
    _, estimate = apply_proxy(gpt, choice, space)
    result = run_pipeline(copy.deepcopy(gpt), choice_recipe(choice, space), tmp_path, measure=False,
                          measure_paths=False)
    assert type(result.model.wpe).__name__ == "QuantEmbedding"
    real = (tmp_path / "model" / "model.safetensors").stat().st_size
    assert abs(real - estimate) < 0.03 * real


def test_channel_and_rank_choices_are_the_real_techniques(mlp):
    """The proxy of removed channels and a low rank is the model the recipe builds: same shapes, same outputs."""
    import copy

    from slimkit.lowrank import LowRankConfig, factorize
    from slimkit.pruning import PruneConfig, prune
    from slimkit.recipes.space import choice_recipe

    space = layer_space(mlp)
    assert "channels25" in space.layers["net.1"] and "channels25" not in space.layers["net.3"]  # 96 is no group
    choice = {"net.1": "channels50", "net.5": "lowrank25"}
    proxy, _ = apply_proxy(mlp, choice, space)
    by_hand = copy.deepcopy(mlp)
    prune(by_hand, PruneConfig(structured=True, ratio=0.5, include=("net.1",)))
    factorize(by_hand, LowRankConfig(param_budget=0.25, include=("net.5",)))
    x = torch.randn(8, 64)
    assert proxy.net[1].out_features == 128 and proxy.net[3].in_features == 128
    assert torch.equal(proxy(x), by_hand(x))
    recipe = choice_recipe(choice, space)
    assert [(s.technique, s.name) for s in recipe.steps] == [("prune", "channels50"), ("factorize", "lowrank25")]
    assert parse_recipe(recipe.to_yaml()) == recipe  # the YAML the search writes reads back to the same steps
    assert torch.equal(run_pipeline(copy.deepcopy(mlp), recipe, measure=False).model(x), by_hand(x))


def test_search_resumes_and_its_recipe_reproduces_the_model(mlp, tmp_path):
    import copy

    import optuna

    config = SearchConfig(max_drop=0.05, trials=2, options=("int8", "int4"))
    first = search(copy.deepcopy(mlp), config, tmp_path)
    second = search(copy.deepcopy(mlp), SearchConfig(max_drop=0.05, trials=4, options=("int8", "int4")), tmp_path)
    study = optuna.load_study(study_name="slimkit", storage=f"sqlite:///{tmp_path / 'search.db'}")
    assert first.trials == 2 and second.trials == 4 and len(study.trials) == 4
    assert second.met and second.after.value >= second.before.value * 0.95
    assert second.after.artifact_bytes < second.before.artifact_bytes / 3
    assert (tmp_path / "pareto.png").stat().st_size > 0
    rebuilt = run_pipeline(copy.deepcopy(mlp), load_recipe(tmp_path / "recipe.yaml"), measure=False)
    saved = load(tmp_path / "model").state_dict()  # the codes and scales, not outputs: execution paths are timed
    assert rebuilt.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(v, saved[k]) for k, v in rebuilt.model.state_dict().items())
    with pytest.raises(Exception, match="holds a search with other settings"):
        search(copy.deepcopy(mlp), SearchConfig(max_drop=0.01, trials=4, options=("int8", "int4")), tmp_path)


def test_the_latency_objective_records_measured_latencies_and_keeps_the_fastest_within_budget(mlp, tmp_path,
                                                                                              monkeypatch):
    import copy

    import optuna

    import slimkit.recipes.search

    measured = []

    def recording(call, **kwargs):  # the real timer; the values it returned are kept to compare
        measured.append(real(call, **kwargs))
        return measured[-1]

    real = slimkit.recipes.search.latency_ms
    monkeypatch.setattr(slimkit.recipes.search, "latency_ms", recording)
    config = SearchConfig(max_drop=0.5, objective="latency", trials=4, options=("int8", "sparse50"))
    result = search(copy.deepcopy(mlp), config, tmp_path)
    study = optuna.load_study(study_name="slimkit", storage=f"sqlite:///{tmp_path / 'search.db'}")
    values = [t.values[0] for t in study.trials]
    assert values == measured and len(values) == 4  # one timing per trial, of the model that trial built
    feasible = [t for t in study.trials if t.constraints["quality_drop"] <= 0]  # drop minus budget
    assert result.met and result.trial == min(feasible, key=lambda t: t.values[0]).number


def test_the_space_takes_the_layers_the_techniques_take():
    """include patterns as every technique reads them: a typo is named with the closest layers, a
    layer inside nn.MultiheadAttention (which reads out_proj's weight itself) stays out."""
    from slimkit.errors import UserInputError

    with pytest.raises(UserInputError, match="include pattern 'net.9' matches no Linear or Embedding layer; "
                                             "closest names: net.1"):
        layer_space(MLP(), include=("net.9",))
    attention = torch.nn.Sequential(torch.nn.MultiheadAttention(64, 4), torch.nn.Linear(64, 64))
    assert list(layer_space(attention).layers) == ["1"]


def test_a_budget_nothing_meets_says_so(mlp, tmp_path):
    with pytest.raises(BudgetNotMet, match=r"no layer can be compressed within a drop of 0.00%: the mildest change, "
                                           r"sparse90 on net\.3 alone, already loses 0\.04"):
        search(mlp, SearchConfig(max_drop=0.0, trials=2, options=("sparse90",)), tmp_path)


def test_cli_refuses_a_budget_that_is_not_a_number(capsys, tmp_path):
    from slimkit.cli import main
    from slimkit.io import save

    save(MLP(), tmp_path / "mlp")
    code = main(["compress", str(tmp_path / "mlp"), "--max-drop", "one%", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--max-drop 'one%': give a number like 1% or 0.01" in err and err.count("\n") == 1
    code = main(["compress", str(tmp_path / "mlp"), "--max-drop", "1%", "--options", "int8,int5", "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "options=['int8', 'int5']: choose among channels25, channels50, sparse50" in err
