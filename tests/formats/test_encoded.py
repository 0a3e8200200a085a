"""EncodedTensor: parts round trip, byte accounting, double quantization."""

import json

import pytest
import torch

from slimkit.errors import ArtifactError
from slimkit.formats import EncodedTensor, double_quant_bits, quantize


def weight(shape=(64, 512), seed=6) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


CASES = [
    dict(fmt="int4", granularity="group", group_size=100),
    dict(fmt="int3", granularity="channel", axis=1, symmetric=False),
    dict(fmt="nf4", granularity="group", group_size=64, double_quant=True),
    dict(fmt="fp8_e4m3", granularity="tensor"),
    dict(fmt="tf32"),
    dict(fmt="ternary", granularity="group", group_size=32),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["fmt"])
def test_parts_round_trip_exactly(case):
    enc = quantize(weight(), **case)
    meta = json.loads(json.dumps(enc.meta()))
    tensors = {key: value.clone() for key, value in enc.tensors().items()}
    rebuilt = EncodedTensor.from_parts(meta, tensors)
    assert rebuilt.meta() == enc.meta()
    assert rebuilt.tensors().keys() == enc.tensors().keys()
    assert all(torch.equal(rebuilt.tensors()[key], value) for key, value in enc.tensors().items())
    assert torch.equal(rebuilt.dequantize(), enc.dequantize())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["fmt"])
def test_nbytes_counts_every_stored_tensor(case):
    enc = quantize(weight(), **case)
    assert enc.nbytes() == sum(t.numel() * t.element_size() for t in enc.tensors().values())
    assert enc.bits_per_element() == enc.nbytes() * 8 / (64 * 512)


def test_codes_are_packed():
    enc = quantize(weight(), "int3", group_size=128)
    assert enc.codes.dtype == torch.uint8 and enc.codes.numel() == 64 * 512 * 3 // 8


def test_double_quant_bits_match_qlora():
    x = weight((1024, 1024))
    plain = quantize(x, "nf4", group_size=64)
    nested = quantize(x, "nf4", group_size=64, double_quant=True)
    assert plain.bits_per_element() == pytest.approx(4.5, abs=0.01)
    assert nested.bits_per_element() == pytest.approx(4.127, abs=0.01)
    assert double_quant_bits() == pytest.approx(4.127, abs=1e-3)
    assert double_quant_bits(double_quant=False) == 4.5
    assert nested.scale is None and nested.scale_codes.dtype == torch.uint8


def test_double_quant_keeps_scales_and_output_close():
    x = weight((256, 1024))
    plain = quantize(x, "nf4", group_size=64)
    nested = quantize(x, "nf4", group_size=64, double_quant=True)
    # 8-bit codes of scales centred on their mean: error at most half a step of absmax(scale - mean) / 127.
    step = (plain.scale - plain.scale.mean()).abs().max() / 127
    assert (nested.scales() - plain.scale).abs().max() <= step / 2 * 1.01
    error = lambda enc: (enc.dequantize() - x).pow(2).mean()  # noqa: E731
    assert error(nested) < error(plain) * 1.01  # double quantization costs under 1% extra MSE


def test_from_parts_rejects_corrupt_parts():
    enc = quantize(weight(), "int4")
    with pytest.raises(ArtifactError, match="missing"):
        EncodedTensor.from_parts({"fmt": "int4"}, enc.tensors())
    with pytest.raises(ArtifactError, match="needs 16384 code bytes, found 100"):
        EncodedTensor.from_parts(enc.meta(), {**enc.tensors(), "codes": enc.codes[:100]})
    with pytest.raises(ArtifactError, match="unknown format 'int11'"):
        EncodedTensor.from_parts({**enc.meta(), "fmt": "int11"}, enc.tensors())
