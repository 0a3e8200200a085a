import json

import pytest

from slimkit.privacy.accountant import epsilon
from tests.conftest import run_cli


def test_privacy_epsilon_and_its_inverse(capsys):
    code, out, _ = run_cli(capsys, "privacy", "epsilon", "--noise", "1.1", "--sample-rate", "0.004", "--steps", "15000",
                       "--delta", "1e-5")
    assert code == 0 and "satisfies (2.5, 1e-05)-DP" in out
    code, out, _ = run_cli(capsys, "privacy", "noise", "--epsilon", "3", "--dataset-size", "60000", "--batch-size",
                       "256", "--epochs", "60", "--json")
    result = json.loads(out)
    assert code == 0 and result["steps"] == 14063 and result["epsilon"] <= 3
    assert epsilon(result["noise_multiplier"] * 0.99, 256 / 60000, 14063, 1e-5) > 3


@pytest.mark.parametrize("argv, message", [
    (["noise", "--epsilon", "0.05", "--sample-rate", "0.01", "--steps", "10"], "smallest reachable epsilon is 0.10"),
    (["epsilon", "--noise", "1", "--steps", "10"], "give --sample-rate, or --batch-size and --dataset-size"),
    (["epsilon", "--noise", "1", "--sample-rate", "0.01"], "exactly one of --steps and --epochs"),
    (["epsilon", "--noise", "1", "--sample-rate", "2", "--steps", "5"], "--sample-rate 2.0 must lie in"),
])
def test_privacy_bad_input_is_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, "privacy", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_privacy_warns_when_delta_is_not_below_one_over_n(capsys):
    with pytest.warns(UserWarning, match=r"delta=0.01 >= 1/N = 0.001"):
        code, _, _ = run_cli(capsys, "privacy", "epsilon", "--noise", "1", "--dataset-size", "1000", "--batch-size", "10",
                         "--steps", "10", "--delta", "0.01")
    assert code == 0


def test_train_with_dp_epsilon(capsys):
    code, out, _ = run_cli(capsys, "train", "--model", "mlp", "--scratch", "--steps", "30", "--batch-size", "256",
                       "--lr", "2e-2", "--dp-epsilon", "3", "--quiet", "--json", "--threads", "1")
    summary = json.loads(out)
    assert code == 0 and summary["config"]["clip_grad_norm"] is None
    assert 2.9 < summary["privacy"]["epsilon"] <= 3.0 and summary["privacy"]["steps"] == 30
    assert summary["quality_after"]["accuracy"] > 0.5


@pytest.mark.parametrize("argv, message", [
    (["--model", "mlp", "--dp-noise", "1"], "trained on these digits without privacy; add --scratch"),
    (["--model", "gpt", "--scratch", "--dp-noise", "1"], "train on the digits"),
    (["--model", "mlp", "--scratch", "--dp-noise", "1", "--dp-epsilon", "3"], "exactly one of noise_multiplier"),
    (["--model", "mlp", "--scratch", "--dp-noise", "1", "--nproc", "2"], "leave out --nproc"),
])
def test_train_dp_refusals(capsys, argv, message):
    code, _, err = run_cli(capsys, "train", *argv, "--steps", "5", "--quiet")
    assert code == 2 and message in err


def test_federated_dp_secure(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "federated", "--clients", "5", "--rounds", "2", "--clip", "1.0", "--noise", "0.5",
                       "--secure", "--model", "mlp:hidden=16", "--local-epochs", "1", "--threads", "1", "--quiet",
                       "--json", "--out", str(tmp_path / "fed"))
    summary = json.loads(out)
    assert code == 0 and summary["epsilon"] == pytest.approx(epsilon(0.5, 1.0, 2, 1e-5))
    assert sum(summary["client_sizes"]) == 1257 and (tmp_path / "fed" / "slimkit.json").exists()
    code, out, _ = run_cli(capsys, "federated", "--clients", "5", "--rounds", "1", "--iid", "--local-epochs", "1",
                       "--threads", "1", "--quiet")
    assert code == 0 and "FedAvg: 5 clients (IID" in out and "| 1 |" in out
