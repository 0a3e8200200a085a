import json
import os

import pytest
import torch

from slimkit import ArtifactError, UserInputError, load, register_class, save
from slimkit.io import artifact_bytes, read_meta
from slimkit.manifest import add_entry, get_manifest
from slimkit.models import GPT, MLP, GPTConfig, ResNet
from tests.conftest import needs_minilm


def _trained_bn(model):
    """Give BatchNorm non-trivial running statistics so the round trip has buffers to keep."""
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 1, 8, 8))
    return model.eval()


@pytest.mark.parametrize("make, example", [
    (lambda: MLP(), lambda: torch.rand(4, 1, 8, 8)),
    (lambda: _trained_bn(ResNet()), lambda: torch.rand(4, 1, 8, 8)),
    (lambda: GPT(GPTConfig(n_layer=2)), lambda: torch.randint(0, 256, (2, 32))),
])
def test_round_trip_is_exact(tmp_path, make, example):
    model, x = make().eval(), example()
    loaded = load(save(model, tmp_path / "a"))
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model = GPT(GPTConfig(n_layer=1))
    save(model, tmp_path)
    meta = read_meta(tmp_path)
    assert meta["aliases"] == {"lm_head.weight": "wte.weight"} and "lm_head.weight" not in meta["tensors"]
    loaded = load(tmp_path)
    assert loaded.lm_head.weight is loaded.wte.weight
    assert len(list(loaded.parameters())) == len(list(model.parameters()))


def test_artifact_bytes_equal_the_files_on_disk(tmp_path):
    save(MLP(), tmp_path)
    sizes = [os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path)]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "slimkit.json"]
    assert artifact_bytes(tmp_path) == sum(sizes)
    # fp32 MLP: the weights file is the parameters plus a small header
    params = sum(p.numel() for p in MLP().parameters())
    assert 4 * params < os.path.getsize(tmp_path / "model.safetensors") < 4 * params + 4096


def test_manifest_and_metrics_survive(tmp_path):
    model = MLP()
    add_entry(model, {"layer": "net.1", "technique": "test", "bits_per_weight": 4.0})
    save(model, tmp_path, metrics={"accuracy": 0.5})
    assert get_manifest(load(tmp_path)) == [{"layer": "net.1", "technique": "test", "bits_per_weight": 4.0}]
    assert read_meta(tmp_path)["metrics"] == {"accuracy": 0.5}


def test_model_without_config_is_refused_with_a_reason(tmp_path):
    with pytest.raises(UserInputError, match="cannot record how to rebuild Linear"):
        save(torch.nn.Linear(2, 2), tmp_path)


@pytest.fixture
def artifact(tmp_path):
    return save(MLP(), tmp_path / "art")


def _expect(path, match):
    with pytest.raises(ArtifactError, match=match) as info:
        load(path)
    return str(info.value)


def test_missing_folder(tmp_path):
    assert "no such directory" in _expect(tmp_path / "nope", "nope")


def test_folder_of_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    _expect(tmp_path, "neither a slimkit artifact")


def test_missing_weights(artifact):
    (artifact / "model.safetensors").unlink()
    _expect(artifact, r"model.safetensors: missing")


def test_truncated_weights(artifact):
    weights = artifact / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _expect(artifact, r"model.safetensors: 1000 bytes, expected \d+; the file is truncated")


def test_corrupt_weights(artifact):
    weights = artifact / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    _expect(artifact, "model.safetensors: checksum mismatch")


def test_removing_the_checksum_is_refused(artifact):
    meta = json.loads((artifact / "slimkit.json").read_text())
    del meta["weights"]
    (artifact / "slimkit.json").write_text(json.dumps(meta))
    _expect(artifact, "field 'weights' is missing; the weights cannot be verified")


def test_unreadable_weights_without_integrity_check(artifact):
    (artifact / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="model.safetensors: not valid JSON"):
        load(artifact, check_integrity=False)


def test_corrupt_description(artifact):
    (artifact / "slimkit.json").write_text('{"format": "slimkit-artifact", ')
    _expect(artifact, "slimkit.json: not valid JSON")


def test_foreign_description(artifact):
    (artifact / "slimkit.json").write_text('{"format": "keras"}')
    _expect(artifact, "slimkit.json: not a slimkit artifact description")


def test_newer_format_version(artifact):
    meta = json.loads((artifact / "slimkit.json").read_text())
    meta["format_version"] = 99
    (artifact / "slimkit.json").write_text(json.dumps(meta))
    _expect(artifact, "format version 99 is newer .* upgrade slimkit")


def test_weights_of_another_model(tmp_path):
    save(MLP(), tmp_path / "a")
    save(ResNet(), tmp_path / "b")
    (tmp_path / "a" / "slimkit.json").write_bytes((tmp_path / "b" / "slimkit.json").read_bytes())
    _expect(tmp_path / "a", "model.safetensors: .* bytes, expected")
    # past the integrity check, the description itself is held to the file
    with pytest.raises(ArtifactError, match="tensors in the description and in the weights file differ"):
        load(tmp_path / "a", check_integrity=False)


@needs_minilm
def test_minilm_round_trip_and_hf_folder(tmp_path):
    from slimkit.data import embed, minilm, sentences

    ref = minilm()
    loaded = load(save(ref.model, tmp_path / "art"))
    assert type(loaded) is type(ref.model)
    texts = sentences()[:8]
    assert torch.equal(embed(ref.model, ref.tokenizer, texts), embed(loaded, ref.tokenizer, texts))
    from_folder = load(ref.path)  # the package's Hugging Face folder itself
    assert type(from_folder) is type(ref.model)
    assert torch.equal(embed(from_folder, ref.tokenizer, texts), embed(ref.model, ref.tokenizer, texts))


@register_class
class Doubler(torch.nn.Module):
    """A stand-in for a module a transform swaps in: rebuilt from its spec, state from the file."""

    def __init__(self, width):
        super().__init__()
        self.width = width
        self.register_buffer("codes", torch.zeros(width, dtype=torch.uint8))

    def slimkit_spec(self):
        return {"width": self.width}

    @classmethod
    def from_slimkit_spec(cls, spec):
        return cls(spec["width"])

    def forward(self, x):
        return 2 * x + self.codes.float().sum()


def test_replaced_modules_are_rebuilt_from_their_spec(tmp_path):
    model = MLP().eval()
    swapped = Doubler(3)
    swapped.codes.copy_(torch.tensor([1, 2, 3]))
    model.net[2] = swapped
    loaded = load(save(model, tmp_path))
    assert read_meta(tmp_path)["replaced_modules"] == {
        "net.2": {"class": "tests.test_io.Doubler", "spec": {"width": 3}}}
    assert isinstance(loaded.net[2], Doubler) and loaded.net[2].codes.tolist() == [1, 2, 3]
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))


def test_frozen_parameters_stay_frozen_through_save_and_load(tmp_path):
    model = MLP()
    model.net[1].requires_grad_(False)  # e.g. a frozen base under adapters
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == \
        {n: p.requires_grad for n, p in model.named_parameters()}
