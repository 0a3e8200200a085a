"""The command line's small manners (issue 23): --version, a closed pipe, --quiet for transformers' bars,
defaults in every --help."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from slimkit import __version__
from slimkit.cli import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"slimkit {__version__}"


def test_a_closed_pipe_ends_quietly():
    # ``slimkit compress --list | head -1``: head leaves after one line
    done = subprocess.run(f"{sys.executable} -m slimkit.cli compress --list | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_quiet_silences_transformers_loading_bars():
    from slimkit.progress import set_quiet

    set_quiet(True)
    try:
        import transformers

        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        set_quiet(False)


def test_every_option_with_a_default_shows_it():
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for verb, sub in verbs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, [], (), argparse.SUPPRESS):
                if "default" not in formatter._get_help_string(action):
                    missing.append(f"{verb} {action.option_strings[0]}")
    assert not missing


def test_training_on_no_data_says_so():
    from slimkit import UserInputError, train
    from slimkit.models import from_spec

    with pytest.raises(UserInputError, match="the training data is empty"):
        train(from_spec("mlp:hidden=8"), [])


def test_one_seed_seeds_everything_random_in_a_run(monkeypatch, tmp_path):
    """``--seed`` reaches what the verb does not seed itself, e.g. LoRA adapters injected into a saved
    model (four runs of ``train --model DIR --lora ...`` gave four results)."""
    import torch

    from slimkit import lora, save
    from slimkit.cli import train as train_verb
    from slimkit.models import from_spec

    save(from_spec("mlp:hidden=16"), tmp_path / "mlp")
    adapters = []

    def run(args):  # what train does first with a saved folder: load it and inject adapters
        from slimkit.io import load

        model = load(args.model)
        lora.inject(model, lora.LoRAConfig(rank=2))  # A drawn at random (B starts at zero)
        adapters.append(torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]))
        return 0

    monkeypatch.setattr(train_verb, "run", run)
    for seed in (3, 3, 4):
        torch.manual_seed(len(adapters) + 100)  # whatever state the process was in before
        assert main(["train", "--model", str(tmp_path / "mlp"), "--seed", str(seed)]) == 0
    assert torch.equal(adapters[0], adapters[1]) and not torch.equal(adapters[0], adapters[2])


def _mlp_with_a_nan():
    import torch

    from slimkit.models import from_spec

    model = from_spec("mlp:hidden=16")
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        linear.weight[0, 1] = float("nan")
    return model


def test_nan_weights_are_refused_by_prune_and_eval_with_the_layer_name():
    from slimkit import PruneConfig, UserInputError, evaluate, prune

    with pytest.raises(UserInputError, match=r"layer 'net\.\d+': weight has 1 NaN/Inf value"):
        prune(_mlp_with_a_nan(), PruneConfig(sparsity=0.5))
    with pytest.raises(UserInputError, match=r"'net\.\d+\.weight' holds 1 NaN/Inf value"):
        evaluate(_mlp_with_a_nan(), "digits")


def test_eval_on_a_task_the_model_cannot_run_is_one_clear_line(tmp_path, capsys):
    from slimkit import save
    from slimkit.models import from_spec

    save(from_spec("mlp:hidden=16"), tmp_path / "mlp")
    assert main(["eval", str(tmp_path / "mlp"), "--task", "pycorpus"]) == 2
    err = capsys.readouterr().err
    assert "a MLP cannot run the 'pycorpus' task" in err and "Traceback" not in err


def test_a_bad_lora_spec_is_refused_before_the_model_is_loaded(capsys):
    assert main(["train", "--model", "/nonexistent/model", "--lora", "r=0"]) == 2
    err = capsys.readouterr().err
    assert "LoRA rank=0" in err and "nonexistent" not in err  # the spec was checked first


def test_train_without_out_says_the_result_was_discarded(tmp_path, capsys):
    from slimkit import save
    from slimkit.models import from_spec

    save(from_spec("mlp:hidden=8"), tmp_path / "mlp")
    assert main(["train", "--model", str(tmp_path / "mlp"), "--steps", "1", "--quiet"]) == 0
    assert "| saved | nowhere: the trained model was discarded (add --out DIR to keep it) |" in capsys.readouterr().out


def test_a_hugging_face_folder_with_pickle_weights_is_refused(tmp_path):
    import torch

    from slimkit import ArtifactError, load

    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(tmp_path)
    torch.save(transformers.LlamaForCausalLM(config).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match=r"pickle files \(pytorch_model.bin\).*safetensors only"):
        load(tmp_path)


@pytest.mark.parametrize("batch, message", [
    ("nan", "calibration batch 0 holds NaN/Inf values"),
    ("narrow", r"calibration batch 0 \(shape \(4, 10\)\) does not fit the MLP"),
])
def test_gptq_calibration_that_cannot_work_is_one_clear_error(batch, message):
    import torch

    from slimkit import UserInputError, WeightQuantConfig, quantize
    from slimkit.models import from_spec

    calib = [torch.full((4, 64), float("nan")) if batch == "nan" else torch.randn(4, 10)]
    with pytest.raises(UserInputError, match=message):
        quantize(from_spec("mlp:hidden=32"), WeightQuantConfig("int4", group_size=None, method="gptq"), calib=calib)


def test_quantizing_an_already_quantized_model_says_so():
    from slimkit import UserInputError, WeightQuantConfig, quantize
    from slimkit.models import from_spec

    config = WeightQuantConfig("int8", group_size=None)
    model = quantize(from_spec("mlp:hidden=32"), config)
    with pytest.raises(UserInputError, match=r"it is compressed already \(QuantLinear \(2\)\): start from the float"):
        quantize(model, config)


def test_the_builtin_llm_int4_recipe_quantizes_the_gpts_embeddings():
    """docs/recipes.md: llm-int4 supports the GPT (its step 2 failed on a pattern for MiniLM's names).
    Step 1 is GPTQ; RTN int4 stands in for it here (the same layers end quantized, no calibration)."""
    from slimkit import WeightQuantConfig, quantize
    from slimkit.manifest import get_manifest
    from slimkit.models import from_spec
    from slimkit.recipes.recipe import load_recipe

    recipe = load_recipe("llm-int4")
    gpt = quantize(from_spec("gpt:n_layer=1,n_head=2,n_embd=64,block_size=16"), WeightQuantConfig("int4", group_size=64))
    quantize(gpt, recipe.steps[1].config)
    entries = {e["layer"]: e for e in get_manifest(gpt) if e.get("format") == "int8" or "skipped" in e}
    assert entries["wpe"]["format"] == "int8" and type(gpt.wpe).__name__ == "QuantEmbedding"
    assert "skipped" in entries["wte"] or "skipped" in entries["lm_head"]  # tied: left float, as the docs say


def test_weights_and_description_are_written_with_the_same_permissions(tmp_path):
    import os
    import stat

    from slimkit import save
    from slimkit.models import from_spec

    previous = os.umask(0o027)
    try:
        save(from_spec("mlp:hidden=8"), tmp_path / "mlp")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "mlp").iterdir()}
    assert modes["model.safetensors"] == modes["slimkit.json"] == 0o640  # the umask respected for both


def test_saving_a_plain_model_does_not_import_transformers(tmp_path):
    code = ("import sys, slimkit\nfrom slimkit.models import from_spec\n"
            f"slimkit.save(from_spec('mlp:hidden=8'), {str(tmp_path / 'mlp')!r})\n"
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_a_pretrained_zoo_name_stands_for_its_converted_folder(monkeypatch, tmp_path):
    from slimkit.cli import build_parser, model_dir
    from slimkit.models import zoo

    monkeypatch.setattr(zoo, "hf_folder", lambda name: tmp_path / f"{name}-folder")
    assert model_dir("smollm2") == str(tmp_path / "smollm2-folder")
    assert model_dir("some/folder") == "some/folder"
    for verb in ("quantize", "prune", "factorize", "eval", "export", "compress"):
        required = {"export": ["--to", "gguf", "--out", "x"], "eval": [],
                    "factorize": ["--rank", "4", "--out", "x"]}.get(verb, ["--out", "x"])
        args = build_parser().parse_args([verb, "smollm2", *required])
        assert args.model_dir == str(tmp_path / "smollm2-folder"), verb
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").mkdir()  # a folder of that name here is what the user means
    assert model_dir("smollm2") == "smollm2"
