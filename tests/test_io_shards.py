"""Artifacts written part by part (``slimkit.io.saving``): one shard per part, each checked on load."""

import hashlib
import json

import pytest
import torch

from slimkit import ArtifactError, load, save
from slimkit.description import digest
from slimkit.io import read_meta, saving
from slimkit.models import GPT, GPTConfig
from slimkit.quantization import WeightQuantConfig, quantize


def _quantized_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3)).eval()
    quantize(model, WeightQuantConfig("int4", group_size=32, method="rtn"))
    return model


def _sharded(model, path):
    """Each block written as its own part and then dropped, as layer-by-layer quantization does."""
    with saving(path) as writer:
        for i, block in enumerate(model.blocks):
            writer.write_part(f"blocks.{i}", block)
        rest = GPT(model.config)  # the rest of the model: the blocks' tensors are already on disk
        rest.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")},
                             strict=False)
        rest.blocks = torch.nn.ModuleList(torch.nn.Module() for _ in model.blocks)
        writer.finish(rest)
    return path


@pytest.fixture(scope="module")
def quantized():
    return _quantized_gpt()


@pytest.fixture
def pair(tmp_path, quantized):
    return quantized, _sharded(quantized, tmp_path / "sharded")


def test_sharded_artifact_loads_the_same_model_as_a_single_file(tmp_path, pair):
    model, sharded = pair
    single = load(save(model, tmp_path / "single"))
    got = load(sharded)
    assert sorted(p.name for p in sharded.iterdir()) == [
        "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
        "model-00004-of-00004.safetensors", "slimkit.json"]
    assert got.state_dict().keys() == single.state_dict().keys()
    for name, tensor in single.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name
    assert got.lm_head.weight is got.wte.weight  # tied inside the last part, as saved
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.equal(got(ids), model(ids))
    meta, single_meta = read_meta(sharded), read_meta(tmp_path / "single")
    assert meta["format_version"] == 4 and single_meta["format_version"] == 3
    for key in ("tensors", "aliases", "replaced_modules", "frozen", "architecture"):
        assert meta[key] == single_meta[key], key


def test_writer_without_finish_leaves_nothing(tmp_path, quantized):
    with pytest.raises(RuntimeError, match="finish was not called"):
        with saving(tmp_path / "a") as writer:
            writer.write_part("blocks.0", quantized.blocks[0])
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_overlapping_parts_are_refused(tmp_path, quantized):
    model = quantized
    with pytest.raises(ValueError, match="overlaps"):
        with saving(tmp_path / "a") as writer:
            writer.write_part("blocks.0", model.blocks[0])
            writer.write_part("blocks.0.attn", model.blocks[0].attn)


def _rewrite_meta(path, edit):
    meta = json.loads((path / "slimkit.json").read_text())
    edit(meta)
    meta["integrity"]["sha256"] = digest(meta)  # a consistent description: only the per-file checks can catch it
    (path / "slimkit.json").write_text(json.dumps(meta))


def test_a_flipped_bit_in_one_shard_is_caught(pair):
    _, path = pair
    shard = path / "model-00002-of-00004.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model-00002-of-00004.safetensors: checksum mismatch"):
        load(path)


def test_a_missing_shard_is_named(pair):
    _, path = pair
    (path / "model-00003-of-00004.safetensors").unlink()
    with pytest.raises(ArtifactError, match="model-00003-of-00004.safetensors: missing"):
        load(path)


def test_a_shard_swapped_for_another_is_caught_even_with_a_consistent_description(pair):
    _, path = pair
    a, b = path / "model-00001-of-00004.safetensors", path / "model-00002-of-00004.safetensors"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(ArtifactError, match="model-00001-of-00004.safetensors: .*bytes, expected|checksum mismatch"):
        load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["weights"].update(shards=[]), "should list 1 to"),
    (lambda m: m["weights"]["shards"][0].update(file="../../etc/passwd"), "should be named like"),
    (lambda m: m["weights"]["shards"].append(dict(m["weights"]["shards"][0])), "listed twice"),
    (lambda m: m["weights"]["shards"][0].update(bytes="many"), "bytes should be the file's size"),
])
def test_malformed_shard_lists_are_refused(pair, edit, message):
    _, path = pair
    _rewrite_meta(path, edit)
    with pytest.raises(ArtifactError, match=message):
        load(path)


def test_a_tensor_in_two_shards_is_refused(pair):
    _, path = pair
    from safetensors.torch import load_file, save_file

    first, last = path / "model-00001-of-00004.safetensors", path / "model-00004-of-00004.safetensors"
    tensors = load_file(first)
    save_file({**load_file(last), **tensors}, last, metadata={"format": "slimkit-artifact"})
    data = last.read_bytes()

    def edit(meta):
        meta["weights"]["shards"][3].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    _rewrite_meta(path, edit)
    with pytest.raises(ArtifactError, match="is also in another weights file"):
        load(path)
