"""Hostile artifacts: each is refused with a SlimkitError, runs nothing, allocates nothing large.

Every edit of slimkit.json is re-signed with a correct digest (whoever writes the JSON writes the
digest too), so these prove the checks behind the integrity digest; the unsigned edits at the end
prove the digest itself. A payload that ran would create ``sentinel`` or delete ``keep/``.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimkit import SlimkitError, load, save
from slimkit.adapters import LoRAConfig
from slimkit.adapters.lora import inject
from slimkit.cli import main
from slimkit.models import GPT, MLP, GPTConfig, MLPConfig
from slimkit.quantization import WeightQuantConfig, quantize
from tests.security.hostile import edit_meta, resign


@pytest.fixture
def guard(tmp_path):
    """(sentinel, keep): a file a payload would create and a folder one would delete; checked untouched."""
    sentinel, keep = tmp_path / "sentinel", tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    yield sentinel, keep
    assert not sentinel.exists() and (keep / "precious.txt").exists()


def _mlp(tmp_path):
    return save(MLP(MLPConfig(16, (8,), 4)), tmp_path / "mlp")


def _int4(tmp_path):
    return save(quantize(MLP(MLPConfig(16, (32,), 4)), WeightQuantConfig("int4", group_size=16)), tmp_path / "int4")


def _lora(tmp_path):
    model = MLP(MLPConfig(16, (8,), 4))
    inject(model, LoRAConfig(rank=2))
    return save(model, tmp_path / "lora")


def _gpt(tmp_path):
    return save(GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16, vocab_size=32)), tmp_path / "gpt")


def _arch(**values):
    return lambda m: m["architecture"].update(values)


def _payloads(sentinel, keep):
    """(name, artifact maker, edit of the parsed description) for every hostile description."""
    touch, rmtree = f"touch {sentinel}", str(keep)
    return [
        ("os.system class", _mlp, _arch(**{"class": "os:system", "config_class": "builtins:str", "config": {}})),
        ("os.system config", _mlp, _arch(config_class="os:system")),
        ("subprocess.getoutput", _mlp, _arch(**{"class": "subprocess:getoutput"})),
        ("runpy.run_path", _mlp, _arch(**{"class": "runpy:run_path"})),
        ("shutil.rmtree", _mlp, _arch(**{"kind": "init_args", "class": "shutil:rmtree",
                                         "init_args": {"path": rmtree}})),
        ("init_args os.system", _mlp, _arch(**{"kind": "init_args", "class": "os.system",
                                               "init_args": {"command": touch}})),
        ("transformers non-model", _mlp, _arch(**{"kind": "transformers", "class": "pipeline", "config": {}})),
        ("replaced module Popen", _int4,
         lambda m: m["replaced_modules"]["net.1"].update({"class": "subprocess:Popen"})),
        ("nested low-rank child", _mlp, lambda m: m["replaced_modules"].update({"net.1": {
            "class": "LowRankLinear", "spec": {"in_features": 16, "out_features": 8, "rank": 2, "bias": True,
                                               "dtype": "float32", "children": {"first": {"class": "os:system",
                                                                                          "spec": {}}}}}})),
        ("dtype names a torch function", _int4, lambda m: m["replaced_modules"]["net.1"]["spec"].update(
            {"dtype": "load"})),
        ("path-like class", _mlp, _arch(**{"class": "../../../tmp/evil"})),
        ("path-like module name", _int4, lambda m: m["replaced_modules"].update(
            {"../../x": m["replaced_modules"].pop("net.1")})),
        ("path-like tensor name", _mlp, lambda m: m["tensors"].update({"../x": m["tensors"].pop("net.1.bias")})),
        ("n_layer 2**31", _gpt, lambda m: m["architecture"]["config"].update({"n_layer": 2147483648})),
        ("vocab 10**12", _gpt, lambda m: m["architecture"]["config"].update({"vocab_size": 10 ** 12})),
        ("LoRA rank 4e6", _lora, lambda m: m["replaced_modules"]["net.1"]["spec"].update({"rank": 4_000_000})),
        ("hidden width 2**40", _mlp, lambda m: m["architecture"]["config"].update({"hidden": [2 ** 40]})),
        ("huge sparse claim", _mlp, lambda m: m["tensors"]["net.1.weight"].update(
            {"encoding": "csr", "shape": [8, 2 ** 38]})),
        ("shape of 9 dims", _mlp, lambda m: m["tensors"]["net.1.bias"].update({"shape": [1] * 9})),
        ("bias described as int32", _mlp, lambda m: m["tensors"]["net.1.bias"].update({"dtype": "int32"})),
        ("unknown dtype", _mlp, lambda m: m["tensors"]["net.1.bias"].update({"dtype": "object"})),
        ("format_version null", _mlp, lambda m: m.update({"format_version": None})),
        ("format_version string", _mlp, lambda m: m.update({"format_version": "3"})),
        ("architecture missing", _mlp, lambda m: m.pop("architecture")),
        ("architecture a list", _mlp, lambda m: m.update({"architecture": [1, 2]})),
        ("tensors a string", _mlp, lambda m: m.update({"tensors": "x"})),
        ("aliases to nowhere", _mlp, lambda m: m.update({"aliases": {"net.1.weight": "nope"}})),
        ("frozen unknown", _mlp, lambda m: m.update({"frozen": ["net.9.weight"]})),
        ("config unknown key", _mlp, lambda m: m["architecture"]["config"].update({"__init__": 1})),
        ("config wrong type", _gpt, lambda m: m["architecture"]["config"].update({"n_head": "2"})),
        ("config bool for int", _gpt, lambda m: m["architecture"]["config"].update({"n_layer": True})),
        ("n_head not dividing", _gpt, lambda m: m["architecture"]["config"].update({"n_head": 3})),
        ("spec missing keys", _int4, lambda m: m["replaced_modules"]["net.1"].update({"spec": {}})),
        ("spec wrong types", _int4, lambda m: m["replaced_modules"]["net.1"]["spec"].update({"in_features": "x"})),
        ("LoRA negative rank", _lora, lambda m: m["replaced_modules"]["net.1"]["spec"].update({"rank": -1})),
        ("replaced module in a missing parent", _int4, lambda m: m["replaced_modules"].update(
            {"nope.1": m["replaced_modules"]["net.1"]})),
    ]


def _cases():
    return [name for name, _, _ in _payloads(Path("s"), Path("k"))]


@pytest.mark.parametrize("name", _cases())
def test_hostile_description_is_refused_without_side_effects(tmp_path, guard, name):
    maker, edit = next((m, e) for n, m, e in _payloads(*guard) if n == name)
    path = maker(tmp_path)
    edit_meta(path, edit)
    with pytest.raises(SlimkitError):
        load(path)


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("text", [
    '{"format": "slimkit-artifact", "format_version": 3, "x": ' + _deep(100000) + "}",  # RecursionError in json
    '{"format": "slimkit-artifact", "format_version": 3, "x": ' + _deep(200) + "}",  # below it: the depth limit
    '{"format": "slimkit-artifact", "format_version": ' + "9" * 5000 + "}",  # int() refuses > 4300 digits
    '{"format": "slimkit-artifact", "format_version": 3, "x": 1' + "0" * 5000 + ".5}",
    '{"format": "slimkit-artifact", "format_version": NaN}',
    '{"format": "slimkit-artifact", "format_version": 3, ',
    "\xff\xfe",
])
def test_malformed_json_is_refused(tmp_path, text):
    path = _mlp(tmp_path)
    (path / "slimkit.json").write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe")
    with pytest.raises(SlimkitError):
        load(path)


def _rewrite_weights(path, change):
    """Change the stored tensors and re-sign checksum and digest, as an attacker writing both files would."""
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors")
    data = (path / "model.safetensors").read_bytes()
    meta = json.loads((path / "slimkit.json").read_text())
    import hashlib

    meta["weights"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return meta


def test_float_bias_stored_as_int32_is_refused(tmp_path):
    path = _mlp(tmp_path)
    meta = _rewrite_weights(path, lambda t: t.update({"net.1.bias": t["net.1.bias"].view(torch.int32)}))
    meta["tensors"]["net.1.bias"]["dtype"] = "int32"
    resign(path, meta)
    with pytest.raises(SlimkitError, match="tensor 'net.1.bias' is int32 .* the architecture needs float32"):
        load(path)


def test_header_disagreeing_with_the_description_is_refused(tmp_path):
    path = _mlp(tmp_path)
    resign(path, _rewrite_weights(path, lambda t: t.update({"net.1.bias": torch.zeros(9)})))
    with pytest.raises(SlimkitError, match="float32 \\[9\\] in the weights file, float32 \\[8\\] in the description"):
        load(path)


@pytest.mark.parametrize("header", [
    {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99999]}},
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2],
                                                                       "data_offsets": [4, 12]}},
    {"a": {"dtype": "PICKLE", "shape": [2], "data_offsets": [0, 8]}},
    {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}},
])
def test_malformed_safetensors_header_is_refused(tmp_path, header):
    path = _mlp(tmp_path)
    raw = json.dumps(header).encode()
    data = len(raw).to_bytes(8, "little") + raw + bytes(16)
    (path / "model.safetensors").write_bytes(data)
    with pytest.raises(SlimkitError):
        load(path, check_integrity=False)


def test_claimed_header_length_beyond_the_file(tmp_path):
    path = _mlp(tmp_path)
    (path / "model.safetensors").write_bytes((2 ** 60).to_bytes(8, "little") + b"{}")
    with pytest.raises(SlimkitError, match="header claims"):
        load(path, check_integrity=False)


@pytest.mark.parametrize("maker", [_mlp, _int4, _lora])
def test_truncation_and_bit_flips_are_caught(tmp_path, maker):
    path = maker(tmp_path)
    for name in ("model.safetensors", "slimkit.json"):
        original = (path / name).read_bytes()
        for cut in (0, 7, len(original) // 2, len(original.rstrip()) - 1):
            (path / name).write_bytes(original[:cut])
            with pytest.raises(SlimkitError):
                load(path)
        for position in range(0, len(original), max(1, len(original) // 40)):
            flipped = bytearray(original)
            flipped[position] ^= 0x10
            (path / name).write_bytes(bytes(flipped))
            with pytest.raises(SlimkitError):
                load(path)
        (path / name).write_bytes(original)
    load(path)


@pytest.mark.parametrize("maker, edit", [
    (_int4, lambda m: m["replaced_modules"]["net.1"]["spec"].update({"format": "nf4"})),
    (_gpt, lambda m: m["architecture"]["config"].update({"n_head": 4})),
    (_lora, lambda m: m["replaced_modules"]["net.1"]["spec"].update({"alpha": 1.0})),
    (_lora, lambda m: m.update({"frozen": []})),
    (_mlp, lambda m: m.update({"aliases": {"net.3.bias": "net.1.bias"}})),
    (_mlp, lambda m: m["manifest"].append({"layer": "x"})),
])
def test_json_only_edits_without_the_digest_are_refused(tmp_path, maker, edit):
    path = maker(tmp_path)
    meta = json.loads((path / "slimkit.json").read_text())
    edit(meta)
    (path / "slimkit.json").write_text(json.dumps(meta))
    with pytest.raises(SlimkitError, match="integrity digest does not match"):
        load(path)


def test_digest_removed_is_refused_with_the_way_to_re_save(tmp_path):
    path = _mlp(tmp_path)
    meta = json.loads((path / "slimkit.json").read_text())
    del meta["integrity"]
    (path / "slimkit.json").write_text(json.dumps(meta))
    with pytest.raises(SlimkitError, match=r"digest is missing.*check_integrity=False\) and save again"):
        load(path)
    assert load(path, check_integrity=False) is not None


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, guard):
    path = _gpt(tmp_path)
    edit_meta(path, lambda m: m["architecture"]["config"].update({"n_layer": 2147483648}))
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err
    assert not list(Path(tmp_path).glob(".*tmp"))


def test_nothing_is_left_beside_or_inside(tmp_path):
    path = _mlp(tmp_path)
    save(MLP(MLPConfig(16, (8,), 4)), path)  # replaced atomically
    assert sorted(os.listdir(path)) == ["model.safetensors", "slimkit.json"]
    assert sorted(os.listdir(tmp_path)) == ["mlp"]
