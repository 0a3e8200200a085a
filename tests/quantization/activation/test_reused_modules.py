"""Static int8 and QAT on a torchvision-style ResNet whose blocks call one ReLU module twice (issue 19)."""

import torch
import torch.nn.functional as F

from slimkit.quantization import ActivationQuantConfig, convert, prepare_qat, quantize
from tests.reference.vision import tiny_resnet, trained_statistics


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 32, 32, generator=g) for _ in range(n)]


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_static_int8_resnet_with_a_reused_relu_stays_close_to_fp32():
    model = trained_statistics(tiny_resnet())
    x = batches(1, seed=1)[0]
    expected = model(x)
    quantize(model, ActivationQuantConfig(mode="static"), calib=batches(4))
    # int8 weights and activations over 5 convs: a relative error of a few percent, cosine > 0.99;
    # deleting the ReLU after each residual add (the bug) gave 0.28 on resnet18
    assert cosine(model(x), expected) > 0.99


def test_qat_folding_keeps_a_reused_relu():
    model = trained_statistics(tiny_resnet())
    x = batches(1, seed=1)[0]
    expected = model(x)
    prepare_qat(model, ActivationQuantConfig(mode="qat"))  # fold_bn_step=0, what --mode qat uses
    with torch.no_grad():
        for b in batches(4):
            model(b)
    model.eval()
    convert(model)
    assert cosine(model(x), expected) > 0.99
