"""A recipe interrupted at any step boundary and re-run gives the model an uninterrupted run gives.

The interruption is an exception raised when step k starts (what a kill leaves: steps 1..k-1 saved);
the re-run resumes from the saved steps. Equality is bit-exact: the resumed steps load exactly the
tensors (and pruning masks) the uninterrupted run held in memory, and every step seeds its own RNG.
"""

import copy

import pytest
import torch

from slimkit.models import MLP, MLPConfig
from slimkit.pruning import masks
from slimkit.recipes import StepFailed, load_recipe, parse_recipe, run_pipeline
from slimkit.recipes import pipeline

PRUNE_TUNE_QUANT = """
name: ptq
steps:
  - name: prune
    prune: {sparsity: 0.9, scope: global}
  - name: finetune
    finetune: {steps: 10, lr: 1.0e-3, threads: 2}
    batch_size: 32
  - name: int8
    quantize: {format: int8, group_size: 32}
"""


def _run(model, recipe, out):
    return run_pipeline(copy.deepcopy(model), recipe, out, measure=False, measure_paths=False)


def _interrupted(monkeypatch, model, recipe, out, at):
    """Run ``recipe`` with a kill when step ``at`` (1-based) starts, then re-run it to the end."""
    real, calls = pipeline.apply_step, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "apply_step", dying)
    with pytest.raises(StepFailed):  # the pipeline turns any exception inside a step into StepFailed
        _run(model, recipe, out)
    monkeypatch.setattr(pipeline, "apply_step", real)
    return _run(model, recipe, out)


def _same(a, b):
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def _small():
    torch.manual_seed(0)
    return MLP(MLPConfig(64, (32,), 10)).eval()


@pytest.mark.slow
def test_interrupting_at_every_step_boundary_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    recipe = parse_recipe(PRUNE_TUNE_QUANT)
    straight = _run(_small(), recipe, tmp_path / "straight")
    for at in range(1, len(recipe.steps) + 1):
        resumed = _interrupted(monkeypatch, _small(), recipe, tmp_path / f"killed-at-{at}", at)
        assert [r["resumed"] for r in resumed.steps] == [i < at - 1 for i in range(len(recipe.steps))]
        _same(resumed.model, straight.model)


@pytest.mark.slow
def test_builtin_sparse_90_resumed_before_its_finetune_stays_90_percent_sparse(tmp_path, monkeypatch):
    recipe = load_recipe("sparse-90")
    straight = _run(_small(), recipe, tmp_path / "straight")
    resumed = _interrupted(monkeypatch, _small(), recipe, tmp_path / "out", at=2)
    _same(resumed.model, straight.model)
    kept = masks(resumed.model)
    assert set(kept) == {"net.1", "net.3"}  # the fine-tune ran with the masks loaded from step 1's artifact
    pruned = sum(int((~k).sum()) for k in kept.values()) / sum(k.numel() for k in kept.values())
    zeros = sum(int((resumed.model.get_submodule(n).weight[~k] == 0).sum()) for n, k in kept.items())
    assert pruned > 0.899 and zeros == sum(int((~k).sum()) for k in kept.values())  # none regrew


def test_a_changed_recipe_never_deletes_files_slimkit_did_not_write(tmp_path):
    from slimkit.errors import UserInputError

    recipe = parse_recipe(PRUNE_TUNE_QUANT.split("  - name: finetune")[0])
    _run(_small(), recipe, tmp_path)
    mine = tmp_path / "steps" / "01-prune" / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(UserInputError, match="holds files slimkit did not write"):
        _run(_small(), parse_recipe(PRUNE_TUNE_QUANT.replace("0.9", "0.8").split("  - name: finetune")[0]),
             tmp_path)
    assert mine.read_text() == "mine"


def _tiny_gpt():
    from slimkit.models import from_spec

    return from_spec("gpt:n_layer=1,n_head=2,n_embd=128,block_size=128", seed=0).eval()  # pycorpus calibrates on 128 tokens


def _same_outputs(a, b, x):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-student", "llm-int4", "edge-int8"])  # sparse-90: the test above
def test_every_builtin_recipe_killed_at_each_step_resumes_to_the_uninterrupted_result(name, tmp_path, monkeypatch):
    recipe = load_recipe(name)
    make, x = ((_tiny_gpt, torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(3)))
               if name == "llm-int4" else (_small, torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))))
    straight = _run(make(), recipe, tmp_path / "straight")
    for at in range(1, len(recipe.steps) + 1):  # killed when step `at` starts: steps before it are saved
        resumed = _interrupted(monkeypatch, make(), recipe, tmp_path / f"killed-at-{at}", at)
        assert [r["resumed"] for r in resumed.steps] == [i < at - 1 for i in range(len(recipe.steps))]
        _same_outputs(resumed.model, straight.model, x)
