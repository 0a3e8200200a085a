"""Hugging Face folders of any architecture through slimkit.load and the `eval` / `quantize` commands (issue 19).

Tiny Llama, Qwen2, Mistral, GPT-2 and BERT folders (random init, small configs, save_pretrained,
a tokenizer trained in-process): the folder's architecture decides the class and the task.
"""

import json

import pytest

import slimkit
from tests.conftest import run_cli

transformers = pytest.importorskip("transformers")
from tests.reference.hf_folders import folder, tokenizer  # noqa: E402

FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
            "gpt2": "GPT2LMHeadModel", "bert": "BertModel", "bert-classifier": "BertForSequenceClassification"}
METRIC = {"LlamaForCausalLM": "perplexity", "BertModel": "cosine_mean", "BertForSequenceClassification": "agreement"}


@pytest.fixture(autouse=True)
def short_measurements(monkeypatch):
    """Fewer windows and greedy tokens than the defaults: the same code paths on tiny models, faster."""
    from slimkit.models import hf_tasks

    monkeypatch.setattr(hf_tasks, "WINDOWS", 2)
    monkeypatch.setattr(hf_tasks, "PROMPTS", 1)
    monkeypatch.setattr(hf_tasks, "NEW_TOKENS", 4)
    monkeypatch.setattr(hf_tasks, "MAX_SENTENCES", 32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tok = tokenizer()
    root = tmp_path_factory.mktemp("hf")
    return {family: folder(family, root / family, tok) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_load_returns_the_class_the_folder_was(folders, family):
    assert type(slimkit.load(folders[family])).__name__ == FAMILIES[family]


def test_an_unknown_architecture_is_one_line_naming_what_is_supported(folders, tmp_path, capsys):
    config = json.loads((folders["bert"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForTokenClassification"]}))
    code, out, err = run_cli(capsys, "eval", str(tmp_path), "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "architecture BertForTokenClassification is not supported; slimkit loads *ForCausalLM" in err


@pytest.mark.parametrize("family, task, fits", [("llama", "pycorpus", "causal-lm"), ("bert", "minilm", "encoder"),
                                                ("gpt2", "encoder", "causal-lm"), ("bert-classifier", "causal-lm",
                                                                                   "classifier")])
def test_a_task_that_does_not_fit_is_one_line_and_exit_2(folders, capsys, family, task, fits):
    code, _, err = run_cli(capsys, "eval", str(folders[family]), "--task", task, "--quiet")
    assert code == 2 and err.count("\n") == 1 and f"use --task {fits}" in err


@pytest.mark.parametrize("family", ["llama", "bert", "bert-classifier"])
def test_eval_measures_each_kind_against_its_float_model(folders, capsys, family):
    code, out, err = run_cli(capsys, "eval", str(folders[family]), "--json", "--runs", "5", "--quiet")
    assert code == 0, err
    record = json.loads(out)
    metric = METRIC[FAMILIES[family]]
    assert record["metric"] == metric
    if metric == "perplexity":  # a random-init model over a 512-word vocabulary: near-uniform predictions
        assert 100 < record["value"] < 5 * 512 and record["quality"]["top1_agreement"] == 1.0
    else:
        assert record["value"] == pytest.approx(1.0, abs=1e-6)  # the float model against itself


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_writes_a_usable_folder_measured_against_the_float_model(folders, tmp_path, capsys, family):
    out = tmp_path / "q"
    code, _, err = run_cli(capsys, "quantize", str(folders[family]), "--weights", "int8", "--per-channel",
                           "--keep-dequant", "--out", str(out), "--json", "--quiet")
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"slimkit.json", "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert ("generation_config.json" in names) == FAMILIES[family].endswith(("CausalLM", "LMHeadModel"))
    assert type(slimkit.load(out)).__name__ == FAMILIES[family]
    code, result, err = run_cli(capsys, "eval", str(out), "--json", "--runs", "5", "--quiet")
    assert code == 0, err
    record = json.loads(result)
    if record["metric"] == "perplexity":
        assert record["quality"]["top1_agreement"] > 0.9  # int8 per channel barely moves a logit
    else:
        assert record["value"] > 0.99


def test_user_data_calibrates_and_evaluates(folders, tmp_path, capsys):
    rows = [{"text": f"the value of item {i} is {'large' if i % 2 else 'small'}", "label": i % 3} for i in range(20)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    code, out, err = run_cli(capsys, "eval", str(folders["bert-classifier"]), "--data", str(data), "--json",
                             "--runs", "5", "--quiet")
    assert code == 0, err
    quality = json.loads(out)["quality"]
    assert quality["agreement"] == 1.0 and 0.0 <= quality["accuracy"] <= 1.0  # 4 held-out rows with labels
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no label"}\n')
    code, _, err = run_cli(capsys, "eval", str(folders["bert-classifier"]), "--data", str(bad), "--quiet")
    assert code == 2 and f"{bad}:1: expected a JSON object with \"text\" and an integer \"label\"" in err


def test_any_verb_output_carries_the_folder_files_and_is_measured_against_its_float_model(folders, tmp_path,
                                                                                          capsys):
    from slimkit.pruning import PruneConfig

    model = slimkit.load(folders["llama"])
    slimkit.prune(model, PruneConfig(sparsity=0.3))
    out = slimkit.save(model, tmp_path / "pruned")  # the folder's files travel with the model, whichever verb ran
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    again = slimkit.save(slimkit.load(out), tmp_path / "again")  # and on from an artifact made from the folder
    assert (again / "tokenizer.json").exists()
    assert json.loads((again / "slimkit.json").read_text())["metrics"]["source"] == str(folders["llama"].resolve())
    code, result, err = run_cli(capsys, "eval", str(again), "--json", "--runs", "5", "--quiet")
    assert code == 0, err
    assert json.loads(result)["metric"] == "perplexity"


@pytest.mark.slow
def test_factorize_takes_a_folder_and_refuses_a_task_that_does_not_fit(folders, tmp_path, capsys):
    code, _, err = run_cli(capsys, "factorize", str(folders["gpt2"]), "--param-budget", "0.8", "--out",
                           str(tmp_path / "f"), "--json", "--quiet")
    assert code == 0, err
    assert (tmp_path / "f" / "tokenizer.json").exists()
    code, _, err = run_cli(capsys, "factorize", str(folders["llama"]), "--rank", "4", "--task", "pycorpus",
                           "--out", str(tmp_path / "g"), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "use --task causal-lm" in err


@pytest.mark.slow
def test_prune_structured_with_user_data_then_export_as_a_plain_folder(folders, tmp_path, capsys):
    import torch

    data = tmp_path / "notes.txt"
    data.write_text("\n\n".join(m.__doc__ for m in (json, pytest, transformers) if m.__doc__) * 4)
    code, _, err = run_cli(capsys, "prune", str(folders["llama"]), "--structured", "--ratio", "0.5", "--data",
                           str(data), "--out", str(tmp_path / "p"), "--json", "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", str(tmp_path / "p"), "--to", "hf", "--out", str(tmp_path / "hf"))
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")("the value of item", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**ids).logits, slimkit.load(tmp_path / "p")(**ids).logits, atol=0, rtol=0)
