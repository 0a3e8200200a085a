"""slimkit memory: JSON keys, budget, measured beside predicted, one-line errors."""

import json

from slimkit.cli import main

KEYS = {"parameters", "gradients", "optimizer_states", "master_weights", "activations", "buffers", "total",
        "peak_phase", "logits", "optimizer_temporaries", "allocator_slack"}


def test_json_keys_and_budget(capsys):
    assert main(["memory", "llama-7b", "--precision", "amp-bf16", "--batch", "1", "--seq", "2048",
                 "--device", "cuda", "--budget", "24GB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out) and out["fits"] is False
    assert out["recommendation"]["total"] <= 24e9 and out["recommendation"]["changes"]


def test_table_with_measurement(capsys):
    assert main(["memory", "gpt", "--gpt", "1,2,32", "--batch", "2", "--seq", "32", "--measure", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "measured peak (cpu)" in out and "| activations |" in out


def test_params_only(capsys):
    assert main(["memory", "--params", "7e9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 4 * 7_000_000_000


def test_user_errors_exit_2_with_one_line(capsys):
    assert main(["memory", "llama-7b", "--measure"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use MODEL=gpt" in err
    assert main(["memory", "llama-7b", "--budget", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err
    assert main(["memory", "gpt", "--gpt", "4,3,128"]) == 2
    assert "multiple of n_head" in capsys.readouterr().err
