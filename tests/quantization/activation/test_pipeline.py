import copy

import pytest
import torch
from torch import nn

from slimkit import load, quantize, save
from slimkit.errors import UserInputError
from slimkit.manifest import get_manifest
from slimkit.models import GPT, MLP, GPTConfig, ResNet, ResNetConfig
from slimkit.quantization import ActivationQuantConfig, Int8Conv2d, Int8Linear, calibrate, convert, prepare
from slimkit.quantization import quantize_dynamic


def digits_like(n=4, batch=16):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(batch, 1, 8, 8, generator=g) * 16 for _ in range(n)]


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_dynamic_quantizes_every_linear_and_lists_convs_as_skipped():
    model = ResNet(ResNetConfig(widths=(8, 16))).eval()
    quantize_dynamic(model)
    assert isinstance(model.head, Int8Linear) and not any(isinstance(m, Int8Conv2d) for m in model.modules())
    skipped = {e["layer"]: e["skipped"] for e in get_manifest(model) if "skipped" in e}
    assert skipped["stem.0"] == "dynamic mode quantizes Linear layers; use mode='static' for convolutions"


@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_static_cnn_stays_close_to_float_and_round_trips(tmp_path, observer):
    model = ResNet(ResNetConfig(widths=(8, 16))).eval()
    x = digits_like(1)[0]
    reference = model(x)
    quantize(model, ActivationQuantConfig(mode="static", observer=observer), calib=digits_like())
    assert sum(isinstance(m, Int8Conv2d) for m in model.modules()) == 10
    assert relative_error(model(x), reference) < 0.1
    assert torch.equal(load(save(model, tmp_path))(x), model(x))


def test_tied_and_unsupported_layers_stay_float_with_reasons():
    gpt = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2)).eval()
    quantize_dynamic(gpt)
    skipped = {e["layer"]: e["skipped"] for e in get_manifest(gpt) if "skipped" in e}
    assert skipped == {"lm_head": "weight tied to wte.weight; quantizing it would store it twice"}
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"))
    quantize(conv, ActivationQuantConfig(mode="static"), calib=digits_like(1))
    entry = get_manifest(conv)[0]
    assert entry["layer"] == "0" and "padding_mode='circular'" in entry["skipped"]


def test_smoothquant_and_outlier_decomposition_beat_plain_w8a8_on_outlier_features():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64)).eval()
    boost = torch.ones(64)
    boost[[3, 17]] = 60.0  # two outlier features, as transformers have
    calib = [torch.randn(32, 64) * boost for _ in range(4)]
    x = torch.randn(64, 64) * boost
    reference = model(x)
    errors = {}
    for name, extra in {"plain": {}, "smooth": {"smoothquant": 0.5}, "llm.int8": {"outlier_threshold": 20.0}}.items():
        quantized = quantize(copy.deepcopy(model), ActivationQuantConfig(mode="static", **extra), calib=calib)
        errors[name] = relative_error(quantized(x), reference)
    assert errors["smooth"] < 0.7 * errors["plain"] and errors["llm.int8"] < 0.5 * errors["plain"]


def test_dynamic_smoothquant_needs_calibration_data():
    with pytest.raises(UserInputError, match="need calibration data"):
        quantize_dynamic(MLP(), ActivationQuantConfig(smoothquant=0.5))


def test_zero_calibration_batches_is_an_error():
    model = prepare(MLP(), ActivationQuantConfig(mode="static"))
    with pytest.raises(UserInputError, match="calibration got zero batches"):
        calibrate(model, [])
    with pytest.raises(UserInputError, match="static int8 needs calibration data"):
        quantize(MLP(), ActivationQuantConfig(mode="static"))


def test_convert_before_prepare_is_an_error():
    with pytest.raises(UserInputError, match="convert before prepare"):
        convert(MLP())


def test_bad_config_values_are_named():
    with pytest.raises(UserInputError, match="weight_bits=1"):
        ActivationQuantConfig(weight_bits=1)
    with pytest.raises(UserInputError, match="unknown observer 'kl'"):
        ActivationQuantConfig(observer="kl")
    with pytest.raises(UserInputError, match="smoothquant alpha=1.5"):
        ActivationQuantConfig(smoothquant=1.5)
    with pytest.raises(UserInputError, match="unknown activation quantization setting"):
        ActivationQuantConfig.from_dict({"mode": "static", "bits": 8})
    config = ActivationQuantConfig(mode="static", include=["net.*"])
    assert ActivationQuantConfig.from_dict(config.to_dict()) == config


def test_smoothing_is_kept_only_where_it_lowers_the_simulated_error():
    from slimkit.quantization.activation.outliers import smooth_factors, smoothing_helps

    torch.manual_seed(0)
    weight = torch.randn(32, 64) * 0.1
    outlier_input = torch.randn(256, 64) * torch.where(torch.arange(64) < 2, 50.0, 1.0)
    s = smooth_factors(outlier_input.abs().amax(0), weight, 0.5)
    assert smoothing_helps(outlier_input, weight, s, 8, per_token=False)
    # inputs without outliers, and factors that would blow one weight column up: no gain, left out
    plain_input, blown = torch.randn(256, 64), torch.ones(64)
    blown[0] = 300.0
    assert not smoothing_helps(plain_input, weight, blown, 8, per_token=True)
