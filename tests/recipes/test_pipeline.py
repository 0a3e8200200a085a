"""Running recipes: same result as the techniques applied by hand, resume, failing steps, the CLI."""

import copy
import json

import pytest
import torch

from slimkit.cli import main
from slimkit.io import load, save
from slimkit.models import MLP
from slimkit.pruning import PruneConfig, prune
from slimkit.quantization import WeightQuantConfig, quantize
from slimkit.recipes import StepFailed, parse_recipe, run_pipeline
from slimkit.recipes.steps import student_model

PRUNE_QUANT = """
name: pq
steps:
  - name: prune
    prune: {sparsity: 0.5}
    overrides: {'net.3': {sparsity: 0.25}}
  - name: int4
    quantize: {format: int4, group_size: 32}
    overrides: {'net.3': {format: int8}, 'net.1': skip}
"""


def _by_hand(model):
    """The reference: what PRUNE_QUANT says, as direct calls."""
    prune(model, PruneConfig(sparsity=0.5, exclude=("net.3",)))
    prune(model, PruneConfig(sparsity=0.25, include=("net.3",)))
    quantize(model, WeightQuantConfig("int4", group_size=32, exclude=("net.3", "net.1")))
    quantize(model, WeightQuantConfig("int8", group_size=32, include=("net.3",)))
    return model


@pytest.fixture()
def mlp():
    return MLP().eval()


def test_a_recipe_equals_the_techniques_applied_by_hand(mlp, tmp_path):
    x = torch.randn(16, 64)
    expected = _by_hand(copy.deepcopy(mlp))(x)
    result = run_pipeline(mlp, parse_recipe(PRUNE_QUANT), tmp_path / "out", measure=False,
                          measure_paths=False)
    assert torch.equal(result.model(x), expected)
    assert torch.equal(load(tmp_path / "out" / "model")(x), expected)
    assert type(result.model.net[1]).__name__ == "Linear" and type(result.model.net[3]).__name__ == "QuantLinear"
    assert [r["name"] for r in result.steps] == ["prune", "int4"] and not any(r["resumed"] for r in result.steps)
    assert parse_recipe((tmp_path / "out" / "recipe.yaml").read_text()) == parse_recipe(PRUNE_QUANT)


def test_a_rerun_resumes_and_a_changed_step_is_redone(mlp, tmp_path):
    x = torch.randn(4, 64)
    first = run_pipeline(copy.deepcopy(mlp), parse_recipe(PRUNE_QUANT), tmp_path, measure=False, measure_paths=False)
    again = run_pipeline(copy.deepcopy(mlp), parse_recipe(PRUNE_QUANT), tmp_path, measure=False, measure_paths=False)
    assert [r["resumed"] for r in again.steps] == [True, True]
    assert torch.equal(again.model(x), first.model(x))
    changed = run_pipeline(copy.deepcopy(mlp), parse_recipe(PRUNE_QUANT.replace("int8", "int6")), tmp_path,
                           measure=False, measure_paths=False)
    assert [r["resumed"] for r in changed.steps] == [True, False]
    assert not torch.equal(changed.model(x), first.model(x))


def test_a_failing_step_stops_keeps_the_finished_steps_and_says_why(mlp, tmp_path):
    recipe = parse_recipe("steps:\n  - prune: {sparsity: 0.5}\n"
                          "  - distill: {}\n    student: 'mlp:in_features=32'\n    train: {steps: 2}\n")
    with pytest.raises(StepFailed, match=r"step 2 \(distill, distill\) failed: RuntimeError: .*steps 1-1 are saved"):
        run_pipeline(mlp, recipe, tmp_path, measure=False, measure_paths=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["failed_step"] == 2 and "RuntimeError" in report["reason"]
    assert (tmp_path / "steps" / "01-prune" / "slimkit.json").exists()
    assert not (tmp_path / "model").exists()


def test_a_student_scales_the_teachers_widths():
    assert student_model(MLP(), 0.5).config.hidden == (128, 64)
    gpt = student_model(__import__("slimkit").models.from_spec("gpt:n_layer=1,n_head=4,n_embd=64"), 0.3)
    assert gpt.config.n_embd == 20 and gpt.config.n_layer == 1


def test_a_distill_step_trains_the_student(mlp, tmp_path):
    recipe = parse_recipe("steps:\n  - distill: {alpha: 0.9}\n    student: 0.25\n    train: {steps: 3}\n")
    result = run_pipeline(mlp, recipe, tmp_path, measure=False, measure_paths=False)
    assert result.model.config.hidden == (64, 32)
    assert load(tmp_path / "model").config.hidden == (64, 32)


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit:
        code = exit.code
    return (code, *capsys.readouterr())


def test_cli_lists_runs_and_refuses_bad_recipes_in_one_line(capsys, tmp_path, mlp):
    code, out, _ = _cli(capsys, "compress", "--list")
    assert code == 0 and all(name in out for name in ("edge-int8", "llm-int4", "sparse-90", "tiny-student"))
    save(mlp, tmp_path / "mlp")
    (tmp_path / "r.yaml").write_text("steps:\n  - quantize: {format: int8, group_size: null}\n")
    code, out, _ = _cli(capsys, "compress", str(tmp_path / "mlp"), "--recipe", str(tmp_path / "r.yaml"),
                        "--out", str(tmp_path / "out"), "--json", "--quiet")
    report = json.loads(out)
    assert code == 0 and report["after"]["artifact_bytes"] < 0.35 * report["before"]["artifact_bytes"]
    (tmp_path / "bad.yaml").write_text("steps:\n  - quantize:\n      bits: 4\n")
    code, _, err = _cli(capsys, "compress", str(tmp_path / "mlp"), "--recipe", str(tmp_path / "bad.yaml"),
                        "--out", str(tmp_path / "o2"))
    assert code == 2 and err.count("\n") == 1 and "bad.yaml line 3, steps[0].quantize.bits" in err
    code, _, err = _cli(capsys, "compress", str(tmp_path / "mlp"), "--out", str(tmp_path / "o3"))
    assert code == 2 and "either --recipe" in err


def test_a_stale_step_of_a_transformers_model_is_cleared_with_its_config_and_tokenizer(tmp_path):
    """slimkit.save copies a transformers model's config and tokenizer beside it; a later run of a changed
    recipe must clear that step folder, not refuse it as holding files slimkit did not write (seen on SmolLM2)."""
    import slimkit
    from slimkit.atomic import check_replaceable
    from slimkit.cli.output import ARTIFACT_FILES as CLI_OWNED
    from slimkit.recipes.pipeline import ARTIFACT_FILES
    from tests.reference.hf_folders import folder, tokenizer

    source = folder("llama", tmp_path / "llama", tokenizer())
    step = tmp_path / "steps" / "01-int8"
    slimkit.save(slimkit.load(source), step)
    assert {"config.json", "tokenizer.json"} <= {p.name for p in step.iterdir()}
    check_replaceable(step, ARTIFACT_FILES)
    check_replaceable(step, CLI_OWNED)
    (step / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="notes.txt"):
        check_replaceable(step, ARTIFACT_FILES)
