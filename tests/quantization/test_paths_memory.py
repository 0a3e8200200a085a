"""Execution paths keep one copy of the weight by default; faster, bigger ones only within a memory
budget; the choice records the machine and is set aside on another kind of CPU (issue 21)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from slimkit.formats import quantize as encode
from slimkit.io import load, save
from slimkit.models import MLP, MLPConfig
from slimkit.quantization import cpu, kernels
from slimkit.quantization import paths as paths_module
from slimkit.quantization.modules import QuantLinear

# (format, group size, kernel, out features): 96 rows is not a whole number of AVX-512 blocks of the int4
# packing, so its codes are read back through the packed positions rather than the blocked form
CASES = [("int4", 32, "int4pack", 64), ("int4", 64, "int4pack", 96), ("int8", None, "int8pack", 64)]


def quant_linear(fmt: str, group: int | None, out_features: int, in_features: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features)
    enc = encode(linear.weight.detach(), fmt, granularity="group" if group else "channel", axis=0, group_size=group)
    return QuantLinear.from_linear(linear, enc)


def model_of(fmt, group, out_features) -> MLP:
    """An MLP (128 -> out_features -> 16; saved and loaded like any slimkit model) of two QuantLinears."""
    model = MLP(MLPConfig(in_features=128, hidden=(out_features,), classes=16)).eval()
    model.net[1] = quant_linear(fmt, group, out_features)
    model.net[3] = quant_linear(fmt, group and 32, 16, out_features, 1)
    return model


def layers(model: MLP) -> tuple[QuantLinear, QuantLinear]:
    return model.net[1], model.net[3]


def fake_times(fastest: str):
    """choose_paths' timing replaced: ``fastest`` wins at every size, float is slowest (no timing in tests)."""
    return lambda layer, paths, *a, **k: {"float": 9.0, **{p: 1.0 if p == fastest else 5.0 for p in paths}}


@pytest.mark.parametrize("fmt, group, kernel, out_features", CASES)
def test_a_kernel_layout_replaces_the_codes_and_reads_them_back_exactly(fmt, group, kernel, out_features, tmp_path):
    model = model_of(fmt, group, out_features)
    if kernel not in layers(model)[0].available_paths():
        pytest.skip(f"torch has no CPU {kernel} kernel here")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stored_bytes = layers(model)[0].resident_bytes()
    save(model, tmp_path / "plain")
    for layer in layers(model):
        layer.set_path(kernel)
    layer = layers(model)[0]
    assert layer.w_codes is None  # one copy: the kernel's layout
    assert layer.kernel_weight.nbytes == before["net.1.w_codes"].nbytes
    # the kernel's scale table (bf16, scale and zero per group: 4 bytes per group; bf16 per row for int8) is all it adds
    assert layer.resident_bytes() - stored_bytes == layer.kernel_scale.nbytes
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert safetensors_bytes(dict(after)) == safetensors_bytes(before)
    save(model, tmp_path / "chosen")
    assert (tmp_path / "chosen" / "model.safetensors").read_bytes() == (tmp_path / "plain" / "model.safetensors").read_bytes()
    x = torch.randn(3, 128)
    loaded = load(tmp_path / "chosen")
    assert layers(loaded)[0].paths == [(None, kernel)] and layers(loaded)[0].w_codes is None
    assert torch.equal(loaded(x), model(x))
    model.load_state_dict(before)  # loading into a layer whose codes live in the kernel layout
    assert torch.equal(model(x), loaded(x)) and layers(model)[0].w_codes is None


def test_copies_and_moves_keep_the_codes():
    model = model_of("int4", 32, 64)
    if "int4pack" not in layers(model)[0].available_paths():
        pytest.skip("torch has no CPU int4 kernel here")
    codes = layers(model)[0].w_codes.clone()
    layers(model)[0].set_path("int4pack")
    x = torch.randn(2, 128)
    y = model(x)
    assert torch.equal(copy.deepcopy(model)(x), y)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert torch.equal(torch.load(io.BytesIO(buffer.getvalue()))["net.1.w_codes"], codes)
    model.to("cpu", torch.float32)
    assert torch.equal(model(x), y) and torch.equal(layers(model)[0].encoded().codes, codes)


@pytest.mark.parametrize("fmt, group, kernel, out_features", CASES[:1] + CASES[2:])
def test_default_choice_holds_one_copy_and_a_budget_admits_the_float_copy(fmt, group, kernel, out_features,
                                                                          monkeypatch):
    model = model_of(fmt, group, out_features)
    monkeypatch.setattr(paths_module, "_interleaved_ms", fake_times("cached"))  # the float copy is fastest
    entries = paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1)
    for entry, layer in zip(entries, layers(model)):
        assert layer.float_cache is None and all(p != "cached" for _, p in layer.paths)
        assert entry["resident_bytes"] <= entry["stored_bytes"] + (0 if layer.kernel_scale is None
                                                                   else layer.kernel_scale.nbytes)
        assert entry["resident_bytes_by_path"]["cached"] > entry["float_bytes"]
        assert entry["measured_on"] == cpu.signature("cpu") and "flags" in entry["measured_on"]
    small = sum(e["resident_bytes"] for e in entries)
    cached = [e["resident_bytes_by_path"]["cached"] for e in entries]
    # room for the float copy of one layer only: the one that gains more per extra byte (the smaller one)
    paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1,
                              memory_budget=small + cached[1] - entries[1]["resident_bytes"])
    assert layers(model)[0].paths != [(None, "cached")] and layers(model)[1].paths == [(None, "cached")]
    paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1, memory_budget=2.0)  # 2x float: room
    assert layers(model)[0].paths == [(None, "cached")] and layers(model)[1].paths == [(None, "cached")]


def test_a_kernel_that_fails_is_skipped_with_its_reason(monkeypatch):
    model = model_of("int4", 32, 64)
    if "int4pack" not in layers(model)[0].available_paths():
        pytest.skip("torch has no CPU int4 kernel here")

    def broken(kernel, *args):
        raise RuntimeError("no such instruction")

    monkeypatch.setattr(kernels, "run", broken)
    monkeypatch.setattr(paths_module, "_interleaved_ms", fake_times("int4pack"))
    entries = paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1)
    assert entries[0]["skipped_paths"]["int4pack"] == "RuntimeError: no such instruction"
    assert layers(model)[0].paths == [(None, "dequant")]


def test_bf16_path_agrees_with_the_float_product(monkeypatch):
    monkeypatch.setattr(cpu, "missing_bf16", lambda: None)  # offered whatever this CPU is
    layer = quant_linear("int8", None, 64)
    x = torch.randn(5, 128)
    reference = layer(x)
    layer.set_path("bf16")
    assert layer.bf16_cache.dtype == torch.bfloat16 and layer.float_cache is None
    # bf16 weights and inputs: each rounded by at most 2^-9 relative; 128 products summed in fp32
    torch.testing.assert_close(layer(x), reference, rtol=2e-2, atol=2e-2 * reference.abs().max().item())


def test_paths_measured_on_another_cpu_are_set_aside_once(tmp_path, monkeypatch):
    model = model_of("int4", 32, 64)
    monkeypatch.setattr(paths_module, "_interleaved_ms", fake_times("cached"))
    paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1, memory_budget=4.0)
    save(model, tmp_path)
    assert layers(load(tmp_path))[0].paths == [(None, "cached")]  # same machine: trusted
    here = cpu.signature("cpu")
    monkeypatch.setattr(cpu, "signature", lambda device: {"cpu": "Other CPU", "flags": here["flags"][:1]})
    monkeypatch.setattr(cpu, "_DISTRUSTED", set())
    with pytest.warns(UserWarning, match="measured on another CPU") as caught:
        loaded = load(tmp_path)
    assert len([w for w in caught if "another CPU" in str(w.message)]) == 1  # said once for both layers
    assert layers(loaded)[0].paths == [(None, "dequant")] and layers(loaded)[1].paths == [(None, "dequant")]
    assert layers(loaded)[0].float_cache is None
    x = torch.randn(2, 128)
    torch.testing.assert_close(loaded(x), model(x))  # dequant and the float copy compute the same weight


def test_export_of_the_default_choice_carries_no_float_weight(monkeypatch):
    model = model_of("int4", 32, 64)
    monkeypatch.setattr(paths_module, "_interleaved_ms", fake_times("cached"))
    paths_module.choose_paths(model, probe_rows=(1, 8), runs=5, rounds=1)
    x = torch.randn(2, 128)
    program = torch.export.export(model, (x,))
    tensors = {**program.state_dict, **program.constants}
    weight_sized = [name for name, t in tensors.items()
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() >= 64 * 128 // 4]
    assert weight_sized == []
    torch.testing.assert_close(program.module()(x), model(x))


def test_memory_budget_argument():
    from slimkit.cli.quantize import memory_budget

    assert memory_budget("0.5x") == 0.5 and memory_budget("300MB") == 300_000_000
    assert memory_budget("1.5GiB") == int(1.5 * 2**30) and memory_budget("4096") == 4096
    for bad in ("-1", "lots", "0x"):
        with pytest.raises(Exception, match="is not a memory budget"):
            memory_budget(bad)


def test_layers_of_one_shape_and_encoding_are_timed_once_and_each_checked():
    layers = nn.Sequential(quant_linear("int4", 32, 64, seed=1), quant_linear("int4", 32, 64, seed=2),
                           quant_linear("int4", 64, 64, seed=3), quant_linear("int8", None, 64, seed=4))
    calls = []
    real = paths_module._interleaved_ms
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths_module, "_interleaved_ms", lambda layer, *a, **k: calls.append(layer) or real(layer, *a, **k))
        entries = paths_module.choose_paths(layers, probe_rows=(1, 4), runs=5, rounds=1)
    # layer 1 repeats layer 0 (same shapes and dtypes: group 32 int4); group 64 has smaller scales, int8 other codes
    assert [e.get("timed_as") for e in entries] == [None, "0", None, None]
    assert calls == [layers[0]] * 2 + [layers[2]] * 2 + [layers[3]] * 2  # one timing per probe size
    assert entries[1]["speedup_vs_float"] == entries[0]["speedup_vs_float"]
    assert all(layer.paths for layer in layers)  # every layer got its own choice set
