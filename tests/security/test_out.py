"""--out never destroys: refused when it exists or holds the input, --force replaces atomically and only
slimkit's own files, a second writer fails loudly, and a kill during a save leaves the old or the new artifact."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from slimkit import load, save
from slimkit.cli import main
from slimkit.models import MLP, MLPConfig


@pytest.fixture
def artifact(tmp_path):
    torch.manual_seed(0)
    return save(MLP(MLPConfig(64, (16,), 10)), tmp_path / "in")


def _one_line_error(capsys, match):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def test_out_equal_to_the_input_is_refused(artifact, capsys):
    before = (artifact / "model.safetensors").read_bytes()
    assert main(["quantize", str(artifact), "--out", str(artifact), "--quiet"]) == 2
    _one_line_error(capsys, "is the input")
    assert (artifact / "model.safetensors").read_bytes() == before


def test_out_containing_the_input_is_refused(artifact, capsys):
    assert main(["compress", str(artifact), "--recipe", "edge-int8", "--out", str(artifact.parent), "--quiet"]) == 2
    _one_line_error(capsys, "contains the input")
    assert load(artifact) is not None


def test_existing_out_needs_force_and_force_keeps_foreign_files(artifact, tmp_path, capsys):
    out = save(MLP(MLPConfig(64, (16,), 10)), tmp_path / "out")
    assert main(["prune", str(artifact), "--sparsity", "0.5", "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, "already exists; choose another --out or pass --force")
    assert main(["prune", str(artifact), "--sparsity", "0.5", "--out", str(out), "--quiet", "--force"]) == 0
    assert load(out).net[1].weight.eq(0).float().mean() >= 0.5
    (out / "mine.txt").write_text("mine")
    capsys.readouterr()
    assert main(["prune", str(artifact), "--sparsity", "0.5", "--out", str(out), "--quiet", "--force"]) == 2
    _one_line_error(capsys, "holds files slimkit did not write (mine.txt)")
    assert (out / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary folder or lock left


def test_a_second_writer_fails_loudly(artifact, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from slimkit.atomic import locked\n"
        f"with locked({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["quantize", str(artifact), "--out", str(out), "--quiet"]) == 2
        _one_line_error(capsys, "another slimkit process is writing")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_kill_during_saves_leaves_the_old_or_the_new_artifact(tmp_path):
    """kill -9 a process that saves two different models over one folder in a loop, at varied moments."""
    out = tmp_path / "a"
    script = (
        "import torch, slimkit\nfrom slimkit.models import MLP, MLPConfig\n"
        "models = [MLP(MLPConfig(64, (w,), 10)) for w in (256, 128)]\n"
        "i = 0\nwhile True:\n"
        f"    slimkit.save(models[i % 2], {str(out)!r}); i += 1\n    print(i, flush=True)\n")
    widths = set()
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55, 0.89):
        writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # one save finished: the folder exists
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert sorted(os.listdir(out)) == ["model.safetensors", "slimkit.json"]
        widths.add(load(out).config.hidden[0])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "a"]
    assert widths <= {256, 128} and all(name.startswith(".a.") for name in leftovers)
