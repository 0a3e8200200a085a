"""``slimkit train --nproc 2``: the command re-runs itself under torchrun and trains data-parallel."""

import json
import subprocess
import sys

import pytest
import torch

from slimkit.io import load

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # torchrun and 2 fresh interpreters: ~15 s


def test_train_nproc_2(tmp_path):
    out = tmp_path / "mlp"
    done = subprocess.run([sys.executable, "-m", "slimkit.cli", "train", "--model", "mlp", "--scratch", "--steps", "60",
                           "--lr", "3e-3", "--batch-size", "64", "--nproc", "2", "--quiet", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])  # rank 0 alone prints
    assert summary["config"]["threads"] == 1  # --threads 2 shared by the 2 ranks
    assert summary["quality_after"]["accuracy"] > summary["quality_before"]["accuracy"] + 0.5
    assert load(out)(torch.zeros(1, 64)).shape == (1, 10)

