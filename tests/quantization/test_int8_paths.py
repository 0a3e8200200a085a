"""Int8Linear's second int8 path, torch's x86 quantized linear (fbgemm), chosen per layer and row count
beside torch._int_mm (issue 21)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimkit.io import load, save
from slimkit.models import MLP, MLPConfig
from slimkit.quantization import cpu
from slimkit.quantization import paths as paths_module
from slimkit.quantization.activation import modules as int8_modules
from slimkit.quantization.activation.modules import Int8Linear, encode_weight

needs_x86 = pytest.mark.skipif(int8_modules.x86_missing() is not None, reason=str(int8_modules.x86_missing()))


def int8_linear(in_features=128, out_features=64, seed=0) -> tuple[Int8Linear, nn.Linear]:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features)
    return Int8Linear(encode_weight(linear.weight, 8), linear.bias), linear


@needs_x86
def test_x86_path_is_within_the_per_tensor_uint8_rounding_of_the_float_product():
    layer, _ = int8_linear()
    layer.set_path("x86")
    x = torch.randn(7, 128) * 3 + 1
    weight = layer.effective_weight().double()
    reference = torch.nn.functional.linear(x.double(), weight, layer.bias.double())
    # uint8 per tensor with a zero point: each input moves by at most half a step of (max - min) / 255,
    # so each output by at most that times the row's sum of |w| (fp32 rescale adds ~1e-6 relative)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    bound = (hi - lo) / 255 / 2 * weight.abs().sum(1) * 1.01 + 1e-4
    assert ((layer(x).double() - reference).abs() <= bound).all()
    assert layer.kernel_weight is None  # only the packed layout beside the codes
    assert torch.equal(copy.deepcopy(layer)(x), layer(x))  # the opaque packed weight is rebuilt on copy


@needs_x86
def test_chosen_int8_paths_are_saved_and_loaded(tmp_path, monkeypatch):
    model = MLP(MLPConfig(in_features=128, hidden=(64,), classes=16)).eval()
    model.net[1], _ = int8_linear()
    model.net[3], _ = int8_linear(64, 16, seed=1)
    times = {1: 1.0, 8: 5.5}  # int_mm fastest at one row, x86 at 8 rows and overall, both faster than float

    def fake(layer, paths, x, *a, **k):
        return {"float": 9.0, **{p: times[len(x)] if p == "int_mm" else 6.0 - times[len(x)] for p in paths}}

    monkeypatch.setattr(paths_module, "_interleaved_ms", fake)
    entries = paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1)
    # two int8 layouts mixed by row count would hold two copies: the default keeps the one fastest overall
    assert model.net[1].paths == [(None, "x86")] and len(entries) == 2
    assert entries[0]["resident_bytes"] <= entries[0]["resident_bytes_by_path"]["int_mm"]
    paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1, memory_budget=10.0)
    assert model.net[1].paths == [(1, "int_mm"), (None, "x86")]  # a budget lets both layouts in
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.net[1].paths == model.net[1].paths
    x = torch.randn(5, 128)
    assert torch.equal(loaded(x), model(x))


def test_x86_path_is_skipped_with_its_reason_without_vnni(monkeypatch):
    monkeypatch.setattr(cpu, "flags", lambda: ["avx2"])
    layer, _ = int8_linear()
    assert layer.available_paths() == ["int_mm"]
    monkeypatch.setattr(paths_module, "_interleaved_ms",
                        lambda layer, paths, *a, **k: {"float": 2.0, **{p: 1.0 for p in paths}})
    [entry] = paths_module.choose_paths(nn.Sequential(layer), probe_rows=(1, 8), runs=5, rounds=1)
    assert entry["paths"] == [[None, "int_mm"]]
    assert entry["skipped_paths"]["x86"].startswith("no VNNI on this CPU")


@pytest.mark.parametrize("bits", [8, 4])
def test_int8_linear_holds_its_kernel_layout_instead_of_the_codes(bits, tmp_path):
    torch.manual_seed(0)
    linear = nn.Linear(128, 64)
    enc = encode_weight(linear.weight, bits)
    layer = Int8Linear(enc, linear.bias)
    assert layer.w_codes is None and layer.kernel_weight.nbytes == 128 * 64  # int8: the one layout
    assert torch.equal(layer.state_dict()["w_codes"], enc.codes) and torch.equal(layer.encoded().codes, enc.codes)
    paths = ["int_mm"] + (["x86"] if "x86" in layer.available_paths() else [])
    for path in paths:
        layer.set_path(path)
        assert torch.equal(layer.state_dict()["w_codes"], enc.codes)  # read back exactly from either layout
    model = MLP(MLPConfig(in_features=128, hidden=(64,), classes=16)).eval()
    model.net[1] = layer
    save(model, tmp_path)
    x = torch.randn(3, 128)
    assert torch.equal(load(tmp_path)(x), model(x))
