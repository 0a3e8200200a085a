"""slimkit's Triton GEMV kernels on CUDA against the dequantized reference (skipped without a GPU)."""

import pytest
import torch
import torch.nn.functional as F

from slimkit.formats import quantize as encode
from slimkit.io import load, save
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.quantization import WeightQuantConfig, kernels, quantize
from slimkit.quantization.modules import QuantLinear
from slimkit.quantization.paths import choose_paths

pytestmark = pytest.mark.gpu
CASES = [  # fmt, granularity, group size, symmetric, (out, in)
    ("int4", "group", 128, True, (96, 512)),
    ("int4", "group", 64, False, (50, 256)),  # out not a multiple of BLOCK_N: masked rows
    ("int4", "group", 32, True, (64, 96)),
    ("int8", "channel", None, True, (72, 320)),
]


@pytest.mark.parametrize("fmt,granularity,group_size,symmetric,shape", CASES)
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_gemv_equals_dequantized_matmul(fmt, granularity, group_size, symmetric, shape, rows):
    weight = torch.randn(*shape, device="cuda")
    enc = encode(weight, fmt, granularity=granularity, group_size=group_size or 128, symmetric=symmetric,
                 scale_dtype=torch.float16)
    layer = QuantLinear(shape[1], shape[0], enc, bias=torch.randn(shape[0], device="cuda"))
    kernel = "gemv_int4" if fmt == "int4" else "gemv_int8"
    assert kernel in layer.available_paths()
    x = torch.randn(rows, shape[1], device="cuda")
    reference = F.linear(x.double(), enc.dequantize().double(), layer.bias.double())
    layer.set_path(kernel)
    fp32 = layer(x)
    assert torch.allclose(fp32.double(), reference, rtol=1e-4, atol=1e-3 * reference.abs().max().item())
    bf16 = layer(x.bfloat16())  # bf16 activations: only the activations' and output's rounding differ
    assert bf16.dtype == torch.bfloat16
    assert (bf16.double() - reference).abs().max() <= 2e-2 * reference.abs().max()


def test_model_moves_to_cuda_chooses_paths_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = MLP(MLPConfig(in_features=256, hidden=(512,), classes=128))
    quantize(model, WeightQuantConfig("int4", group_size=64))
    x = torch.randn(4, 256)
    cpu_out = model(x)
    model.cuda()  # CPU paths have no CUDA kernel: they fall back to dequant, then CUDA's are offered
    assert all("gemv_int4" in m.available_paths() for m in model.modules() if isinstance(m, QuantLinear))
    entries = choose_paths(model, probe_rows=(1, 16), runs=5, rounds=1)
    assert {p for e in entries for _, p in e["paths"]} <= {"dequant", "cached", "gemv_int4"}
    cuda_out = model(x.cuda())
    assert torch.allclose(cuda_out.cpu(), cpu_out, atol=1e-4)
    save(model, tmp_path / "m")
    loaded = load(tmp_path / "m")  # loads on the CPU: the saved CUDA paths fall back where unavailable
    assert torch.allclose(loaded(x), cpu_out, atol=1e-5)


@pytest.mark.parametrize("fmt,double_quant", [("nf4", True), ("nf4", False), ("int4", False)])
def test_one_pass_dequantization_is_exact(fmt, double_quant):
    weight = torch.randn(96, 384, device="cuda")
    enc = encode(weight, fmt, group_size=64, double_quant=double_quant)
    reference = enc.dequantize()  # the general (many-op) path
    assert torch.equal(kernels.dequantize(enc, torch.float32), reference)
    assert torch.equal(kernels.dequantize(enc, torch.bfloat16), reference.bfloat16())


@pytest.mark.parametrize("launch", [dict(mode="tiles"), dict(mode="tiles", split_nibbles=True),
                                    dict(mode="row"), dict(mode="row", split_k=2), dict(mode="row", block_n=32)])
@pytest.mark.parametrize("fmt,group_size,symmetric", [("int4", 128, True), ("int4", 64, False), ("int8", None, True)])
def test_every_kernel_variant_computes_the_same(launch, fmt, group_size, symmetric):
    from slimkit.quantization import triton_kernels

    weight = torch.randn(80, 2048, device="cuda")
    enc = encode(weight, fmt, granularity="group" if group_size else "channel", group_size=group_size or 128,
                 symmetric=symmetric, scale_dtype=torch.float16)
    codes, scale = kernels.prepare(enc, "gemv_" + fmt)
    reference_weight = enc.dequantize().double()
    for rows in (1, 5, 20):
        x = torch.randn(rows, 2048, device="cuda")
        if fmt == "int4":
            y = triton_kernels.int4_gemv(x, codes, scale[0], scale[1] if len(scale) == 2 else None, group_size,
                                         block_k=512, **launch)
        elif launch.get("split_nibbles"):
            continue  # an int4 layout only
        else:
            y = triton_kernels.int8_gemv(x, codes, scale[0, :, 0], block_k=512, **launch)
        reference = x.double() @ reference_weight.T
        assert torch.allclose(y.double(), reference, rtol=1e-4, atol=1e-3 * reference.abs().max().item())
