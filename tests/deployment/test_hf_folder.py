"""--to hf: a structured-pruned transformers model as a plain Hugging Face folder that from_pretrained
loads without slimkit, with the pruned model's logits; what a config cannot express is refused."""

import subprocess
import sys

import pytest
import torch

import slimkit
from slimkit.cli import main
from slimkit.deployment import ExportRefused, export
from slimkit.lowrank import LowRankConfig
from slimkit.pruning import PruneConfig, prune
from slimkit.pruning.modules import shrink_linear
from slimkit.quantization import WeightQuantConfig

transformers = pytest.importorskip("transformers")

# transformers is told not to import slimkit at all, then loads the folder and prints its logits' sum
NO_SLIMKIT = """
import sys, torch, transformers
sys.modules["slimkit"] = None  # any import of slimkit now fails
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.arange(16).view(2, 8) % model.config.vocab_size
print(repr(model(ids).logits.double().sum().item()), model.config.num_key_value_heads, model.config.intermediate_size)
"""


def _pruned(model, ids):
    prune(model, PruneConfig(structured=True, ratio=0.5), example_inputs=ids)
    return model


def test_pruned_llama_loads_in_transformers_with_the_same_logits(tiny_llama, token_ids, tmp_path):
    model = _pruned(tiny_llama, token_ids)
    out = export(model, tmp_path / "hf", to="hf")
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert (loaded.config.num_key_value_heads, loaded.config.intermediate_size) == (1, 64)  # from 2 and 128
    with torch.no_grad():  # the same float32 weights and the same modules: the same arithmetic
        torch.testing.assert_close(loaded(token_ids).logits, model(token_ids).logits, atol=0, rtol=0)


@pytest.mark.slow  # a fresh interpreter importing transformers: ~5 s
def test_the_cli_round_trip_loads_where_slimkit_cannot_be_imported(tiny_llama, token_ids, tmp_path, capsys):
    slimkit.save(_pruned(tiny_llama, token_ids), tmp_path / "p")  # the CLI's prune needs a task: a random Llama has none
    assert main(["export", str(tmp_path / "p"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert f"wrote {tmp_path / 'hf'} (hf" in capsys.readouterr().out
    run = subprocess.run([sys.executable, "-c", NO_SLIMKIT, str(tmp_path / "hf")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    total, kv_heads, width = run.stdout.split()
    pruned = slimkit.load(tmp_path / "p")
    with torch.no_grad():
        expected = pruned(torch.arange(16).view(2, 8) % 128).logits.double().sum().item()
    assert (float(total), int(kv_heads), int(width)) == (expected, 1, 64)


def test_layers_pruned_to_different_widths_are_refused_naming_the_tensor(tiny_llama, tmp_path):
    mlp = tiny_llama.model.layers[1].mlp
    keep = torch.arange(96)  # only this block's MLP: 96 channels where the config says 128
    mlp.gate_proj, mlp.up_proj = shrink_linear(mlp.gate_proj, out_keep=keep), shrink_linear(mlp.up_proj, out_keep=keep)
    mlp.down_proj = shrink_linear(mlp.down_proj, in_keep=keep)
    with pytest.raises(ExportRefused, match=r"model.layers.1.mlp.gate_proj.weight is \(96, 64\) but the config "
                                            r"builds \(128, 64\): a Hugging Face config holds one width per kind"):
        export(tiny_llama, tmp_path / "hf", to="hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("change, advice", [
    (lambda m: slimkit.quantize(m, WeightQuantConfig("int4", group_size=32)), "QuantLinear.*--to compressed-tensors"),
    (lambda m: slimkit.factorize(m, LowRankConfig(rank=8)) and m, "LowRankLinear.*no factorized layers"),
])
def test_slimkit_modules_are_refused_with_what_to_do(tiny_llama, tmp_path, change, advice):
    with pytest.raises(ExportRefused, match=advice):
        export(change(tiny_llama), tmp_path / "hf", to="hf")


def test_a_model_that_is_not_a_transformers_model_is_refused(tmp_path):
    from slimkit.models import MLP, MLPConfig

    with pytest.raises(ExportRefused, match="a MLP is not a transformers model"):
        export(MLP(MLPConfig()), tmp_path / "hf", to="hf")
