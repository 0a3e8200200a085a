import re

import pytest
import torch

from slimkit import load, save
from slimkit.errors import UserInputError
from slimkit.models.tasks import get_task
from slimkit.manifest import get_manifest
from slimkit.models import GPT, MLP, GPTConfig
from slimkit.quantization import QuantLinear, WeightQuantConfig, quantize


def small_gpt():
    return GPT(GPTConfig(n_layer=2, n_embd=64, n_head=2)).eval()


def test_rtn_replaces_linears_records_the_manifest_and_stays_close():
    model, x = MLP().eval(), torch.rand(16, 1, 8, 8)
    before = model(x)
    quantize(model, WeightQuantConfig("int8", group_size=None))
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 3
    entries = get_manifest(model)
    assert [e["layer"] for e in entries] == ["net.1", "net.3", "net.5"]
    assert all(e["format"] == "int8" and e["path"] == "dequant" for e in entries)
    err = (model(x) - before).abs().max() / before.abs().max()
    assert err < 0.01  # int8 per channel: well under 1% of the output range


def test_tied_lm_head_is_skipped_with_the_reason():
    model = quantize(small_gpt(), WeightQuantConfig("int4", group_size=32))
    skipped = {e["layer"]: e["skipped"] for e in get_manifest(model) if "skipped" in e}
    assert skipped == {"lm_head": "weight tied to wte.weight; quantizing it would store it twice"}
    assert isinstance(model.blocks[0].attn.qkv, QuantLinear) and model.lm_head.weight is model.wte.weight


def test_a_cnns_convolutions_stay_float_with_the_reason_and_where_to_go():
    from tests.reference.vision import tiny_resnet

    model = quantize(tiny_resnet().eval(), WeightQuantConfig("int8", group_size=None))
    entries = get_manifest(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [e["layer"] for e in entries if "skipped" not in e] == ["fc"]
    skipped = {e["layer"]: e["skipped"] for e in entries if "skipped" in e}
    assert sorted(skipped) == sorted(convs) and len(convs) > 5
    assert all("ActivationQuantConfig(mode='static')" in reason for reason in skipped.values())


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_save_load_round_trip_is_exact_and_smaller(tmp_path, method):
    model = small_gpt()
    float_bytes = sum(p.numel() for p in model.parameters()) * 4
    calib = [torch.randint(0, 256, (4, 64)) for _ in range(4)]
    quantize(model, WeightQuantConfig("int4", group_size=32, method=method), calib=calib)
    loaded = load(save(model, tmp_path))
    idx = torch.randint(0, 256, (2, 40))
    assert torch.equal(model(idx), loaded(idx))
    assert get_manifest(loaded) == get_manifest(model)
    assert (tmp_path / "model.safetensors").stat().st_size < 0.5 * float_bytes


def test_int4_codes_take_half_a_byte_per_weight():
    model = torch.nn.Sequential(torch.nn.Linear(1024, 256))
    quantize(model, WeightQuantConfig("int4", group_size=128))
    layer = model[0]
    assert layer.w_codes.numel() == 256 * 1024 // 2 and layer.w_codes.dtype == torch.uint8
    bits = layer.encoded().bits_per_element()
    assert abs(bits - (4 + 16 / 128)) < 0.01  # fp16 scales by default


def test_cached_path_gives_the_same_outputs():
    model, x = MLP().eval(), torch.rand(4, 1, 8, 8)
    quantize(model, WeightQuantConfig("nf4", group_size=64, double_quant=True))
    dequant = model(x)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.set_path("cached")
    assert torch.equal(model(x), dequant)


def test_bad_inputs_have_clear_messages():
    with pytest.raises(UserInputError, match="unknown format 'int9'; valid formats: int2, int3"):
        WeightQuantConfig("int9")
    with pytest.raises(UserInputError, match="not a weight code format"):
        WeightQuantConfig("bf16")
    with pytest.raises(UserInputError, match="needs calibration data"):
        quantize(MLP(), WeightQuantConfig(method="gptq"))
    with pytest.raises(UserInputError, match="calibration set for 'awq' is empty"):
        quantize(MLP(), WeightQuantConfig(method="awq"), calib=[])
    model = MLP()
    with torch.no_grad():
        model.net[3].weight[5, 7] = float("nan")
    with pytest.raises(UserInputError, match=r"layer 'net.3': weight has 1 NaN/Inf value\(s\), first at index \(5, 7\)"):
        quantize(model, WeightQuantConfig("int8"))


def test_calibration_never_uses_evaluation_data():
    calib = get_task("pycorpus").calibration(2)
    assert len(calib) == 2 and calib[0].shape == (8, 128)
    from slimkit.models.tasks import calibration_sentences
    from slimkit.data import sentences

    assert not set(calibration_sentences(200)) & set(sentences())


def test_parameter_counts_include_encoded_weights():
    from slimkit.evaluation import parameter_counts

    model = small_gpt()
    before = parameter_counts(model)
    quantize(model, WeightQuantConfig("int8", group_size=None))
    params, nonzero = parameter_counts(model)
    assert params == before[0] and nonzero <= params


@pytest.mark.parametrize("fmt, group, kernel, width, symmetric", [
    ("int4", 128, "int4pack", 256, True), ("int8", None, "int8pack", 256, True),
    # SmolLM2's shape: 576 inputs are 4.5 groups of 128, the last one padded to a whole group for the kernel
    ("int4", 128, "int4pack", 576, True), ("int4", 128, "int4pack", 576, False)], ids=str)
def test_kernel_paths_agree_with_dequantize(fmt, group, kernel, width, symmetric):
    layer = torch.nn.Sequential(torch.nn.Linear(width, 64))
    quantize(layer, WeightQuantConfig(fmt, group_size=group, symmetric=symmetric))
    q, x = layer[0], torch.randn(5, width)
    codes = q.encoded().codes.clone()
    assert kernel in q.available_paths()
    reference = q(x)
    q.set_path(kernel)
    # bf16 activations: about 3 significant digits
    torch.testing.assert_close(q(x), reference, rtol=2e-2, atol=2e-2 * reference.abs().max().item())
    assert q.w_codes is None and torch.equal(q.encoded().codes, codes)  # one copy, read back exactly
    assert torch.equal(layer.state_dict()["0.w_codes"], codes)  # what an artifact stores


def test_paths_are_chosen_per_size_recorded_and_saved(tmp_path):
    from slimkit.quantization.paths import choose_paths

    model = small_gpt()
    quantize(model, WeightQuantConfig("int4", group_size=64))
    entries = choose_paths(model, probe_rows=(1, 64), runs=5)
    layer = model.blocks[0].mlp[0]
    assert len(entries) == 8 and entries[0]["speedup_vs_float"]["1"].keys() == set(layer.available_paths())
    assert layer.paths[-1][0] is None
    loaded = load(save(model, tmp_path))
    assert loaded.blocks[0].mlp[0].paths == layer.paths
    idx = torch.randint(0, 256, (1, 30))
    assert torch.equal(model(idx), loaded(idx))


def test_a_path_the_layer_cannot_run_is_refused():
    layer = torch.nn.Sequential(torch.nn.Linear(100, 10))
    quantize(layer, WeightQuantConfig("int4", group_size=50))
    with pytest.raises(ValueError, match="path 'int4pack' cannot run this int4 layer; available: dequant, cached"):
        layer[0].set_path("int4pack")


def test_embeddings_are_quantized_on_request_and_looked_up_row_by_row(tmp_path):
    from slimkit.quantization import QuantEmbedding

    model = small_gpt()
    quantize(model, WeightQuantConfig("int4", group_size=32, embeddings=True))
    assert isinstance(model.wpe, QuantEmbedding)
    assert not isinstance(model.wte, QuantEmbedding)  # tied to lm_head: skipped with the reason
    idx = torch.tensor([[0, 5, 127], [3, 3, 1]])
    table = model.wpe.encoded().dequantize()
    assert torch.equal(model.wpe(idx), torch.nn.functional.embedding(idx, table))
    loaded = load(save(model, tmp_path))
    x = torch.randint(0, 256, (2, 20))
    assert torch.equal(model(x), loaded(x))
    skipped = {e["layer"]: e["skipped"] for e in get_manifest(model) if "skipped" in e}
    assert "wte" in skipped and "lm_head" in skipped


@pytest.mark.parametrize("fmt, group", [("int4", 16), ("int3", 8), ("nf4", 64), ("fp8_e4m3", None), ("int8", 7)])
def test_row_lookup_equals_full_dequantization(fmt, group):
    from slimkit.formats import quantize as quantize_tensor

    table = torch.randn(50, 64)
    enc = quantize_tensor(table, fmt, granularity="group" if group else "channel", axis=0, group_size=group or 64,
                          double_quant=fmt == "nf4")
    idx = torch.randint(0, 50, (3, 7))
    assert torch.equal(enc.dequantize_rows(idx), enc.dequantize()[idx])


def test_config_round_trips_and_refuses_unknown_keys():
    config = WeightQuantConfig("int4", group_size=64, method="gptq", act_order=True, static_groups=True,
                               mse_clip=True, skip_padding=False)
    assert WeightQuantConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserInputError, match="unknown weight quantization setting.*group; known: format"):
        WeightQuantConfig.from_dict({**config.to_dict(), "group": 32})


def test_gptq_options_with_another_method_are_refused():
    with pytest.raises(UserInputError, match="mse_clip, awq_scale: GPTQ settings, but method='awq'; use method='gptq'"):
        WeightQuantConfig("int4", method="awq", mse_clip=True, awq_scale=True)
    with pytest.raises(UserInputError, match="act_order: GPTQ settings, but method='rtn'"):
        WeightQuantConfig("int4", act_order=True)


def test_a_lone_pattern_string_is_one_pattern_not_one_per_character():
    config = WeightQuantConfig("int4", include="blocks.*", exclude="*.qkv")
    assert (config.include, config.exclude) == (("blocks.*",), ("*.qkv",))


def test_an_include_pattern_matching_no_layer_names_it_and_real_layers():
    model = small_gpt()
    with pytest.raises(UserInputError, match=r"include pattern '\*\.qkvv' matches no Linear layer; closest names: "
                                             r"blocks\.\d\.attn\.qkv"):
        quantize(model, WeightQuantConfig("int4", group_size=32, include=("*.qkvv",)))
    assert not any(isinstance(m, QuantLinear) for m in model.modules())  # nothing was changed


def test_a_path_with_wrong_outputs_is_never_chosen_and_named(monkeypatch):
    """A kernel that computes garbage (here: the CPU int4 kernel made to return its result times 1.5)
    is caught by choose_paths' comparison with the float64 product, even if it is the fastest."""
    from slimkit.quantization import kernels
    from slimkit.quantization import paths as paths_module

    layer = torch.nn.Sequential(torch.nn.Linear(256, 64))
    quantize(layer, WeightQuantConfig("int4", group_size=64))
    if "int4pack" not in layer[0].available_paths():
        pytest.skip("torch has no CPU int4 kernel here")
    real_run = kernels.run
    monkeypatch.setattr(kernels, "run", lambda kernel, *args: real_run(kernel, *args) * 1.5)
    monkeypatch.setattr(paths_module, "_interleaved_ms",  # make the broken kernel look fastest, were it timed
                        lambda layer, paths, *a, **k: {"float": 1.0, **{p: 0.1 if p == "int4pack" else 0.5
                                                                      for p in paths}})
    with pytest.warns(UserWarning, match="int4pack.*wrong outputs"):
        [entry] = paths_module.choose_paths(layer, probe_rows=(1, 8), runs=1, rounds=1)
    assert all(path != "int4pack" for _, path in layer[0].paths)
    assert re.fullmatch(r"output off by (4\.9|5\.[0-1])e-01 of the largest value", entry["rejected_paths"]["int4pack"])
    monkeypatch.setattr(kernels, "run", real_run)  # the same kernel computing correctly is chosen
    [entry] = paths_module.choose_paths(layer, probe_rows=(1, 8), runs=1, rounds=1)
    assert "rejected_paths" not in entry and layer[0].paths == [(None, "int4pack")]


def test_gptq_calibrates_on_a_tokenizers_batch_encoding():
    """A tokenizer's BatchEncoding is a Mapping, not a dict: the calibration check must call model(**batch)
    (it called model(batch), and BERT failed on it: the demo's MiniLM GPTQ row)."""
    from transformers import BatchEncoding, BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64)).eval()
    calib = [BatchEncoding({"input_ids": torch.randint(0, 64, (2, 8)),
                            "attention_mask": torch.ones(2, 8, dtype=torch.long)}) for _ in range(2)]
    quantize(model, WeightQuantConfig("int8", group_size=None, method="gptq"), calib=calib)
    assert any(isinstance(m, QuantLinear) for m in model.modules())
