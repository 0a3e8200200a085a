"""``slimkit federated --nproc 2``: the clients run in two gloo processes and give the in-process result."""

import json
import subprocess
import sys

import pytest
import torch

from slimkit.io import load

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # torchrun and 2 fresh interpreters: ~15 s


def test_two_processes_give_the_in_process_model_bit_for_bit(tmp_path):
    common = [sys.executable, "-m", "slimkit.cli", "federated", "--clients", "6", "--rounds", "3", "--local-epochs", "1",
              "--secure", "--model", "mlp:hidden=16", "--quiet", "--json"]
    models = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        done = subprocess.run([*common, "--nproc", str(nproc), "--threads", str(nproc), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout[done.stdout.index("{"):])["config"]["secure_aggregation"]  # rank 0 alone prints
        models[nproc] = load(out)
    # secure aggregation sums integers: the two processes' partial sums add up to the same bits
    for one, two in zip(models[1].parameters(), models[2].parameters()):
        assert torch.equal(one, two)
