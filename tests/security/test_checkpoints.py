"""Training checkpoints unpickle nothing: JSON + safetensors, and DCP's index through a restricted unpickler."""

import json
import os
import pickle

import pytest
import torch

from slimkit.errors import ArtifactError
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.training import GeneratorBatches, TrainConfig, train
from slimkit.training.checkpoint import read_state


class Payload:
    """Unpickling this runs ``open(sentinel, "w")``: proof that a loader executed file contents."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _run(ckpt, steps, resume=False):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16))

    def draw(g):
        x = torch.randint(0, 256, (2, 8), generator=g)
        return x, torch.roll(x, -1, dims=1)

    config = TrainConfig(steps=steps, lr=1e-3, checkpoint_dir=str(ckpt), checkpoint_every=2, resume=resume)
    return model, train(model, GeneratorBatches(draw, 0), config)


def test_checkpoint_is_json_and_safetensors_and_resumes(tmp_path):
    _run(tmp_path / "ck", 2)
    folder = tmp_path / "ck" / "train-state"
    assert sorted(os.listdir(folder)) == ["state.json", "tensors.safetensors"]
    assert not list(tmp_path.rglob("*.pt"))
    state = read_state(tmp_path / "ck")
    assert state["step"] == 2 and isinstance(state["rng"]["python"], tuple)
    assert torch.equal(state["rng"]["torch"], state["rng"]["torch"].to(torch.uint8))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.__setitem__("rng", {"__inline__": {"dtype": "load", "shape": [1], "data": ""}}), "malformed"),
    (lambda s: s.__setitem__("model", {"__tensor__": "../../etc/passwd"}), "which the tensor file lacks"),
    (lambda s: s.__setitem__("format", {"__float__": "1e400"}), "malformed"),
])
def test_edited_state_is_refused(tmp_path, edit, match):
    _run(tmp_path / "ck", 2)
    path = tmp_path / "ck" / "train-state" / "state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(ArtifactError, match=match):
        read_state(tmp_path / "ck")


def test_a_pickled_checkpoint_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "ran"
    (tmp_path / "ck").mkdir()
    with open(tmp_path / "ck" / "train-state.pt", "wb") as f:  # what format 1 wrote, with a payload
        pickle.dump({"format": 1, "model": Payload(sentinel)}, f)
    with pytest.raises(ArtifactError, match="no longer reads"):  # refused, never opened, never silently fresh
        _run(tmp_path / "ck", 2, resume=True)
    assert not sentinel.exists()


def test_sharded_checkpoint_index_with_a_payload_is_refused(tmp_path):
    from slimkit.distributed.checkpoint import FOLDER, saved_world_size
    import slimkit.distributed.checkpoint as sharded

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16))
    config = TrainConfig(steps=2, lr=1e-3, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=2)
    batches = GeneratorBatches(lambda g: (torch.randint(0, 256, (2, 8), generator=g),) * 2, 0)
    train(model, batches, config, checkpoints=sharded)
    assert saved_world_size(tmp_path / "ck") == 1
    sentinel = tmp_path / "ran"
    with open(tmp_path / "ck" / FOLDER / ".metadata", "wb") as f:
        pickle.dump(Payload(sentinel), f)
    with pytest.raises(ArtifactError, match="refused global"):
        saved_world_size(tmp_path / "ck")
    assert not sentinel.exists()
