import numpy as np
import pytest
import torch
from torch import nn

from slimkit.lowrank import LowRankConv2d
from tests.reference import lowrank as ref

GEOMETRIES = [  # (conv arguments), chosen to exercise stride, padding, dilation and non-square kernels
    dict(in_channels=6, out_channels=10, kernel_size=3, padding=1),
    dict(in_channels=5, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(in_channels=7, out_channels=4, kernel_size=3, stride=2, padding="valid", bias=False),
]


@pytest.mark.parametrize("method", ["tucker2", "spatial"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_full_ranks_reproduce_the_conv(method, geometry):
    conv = nn.Conv2d(**geometry)
    c_out, c_in, kh, kw = conv.weight.shape
    ranks = (c_out, c_in) if method == "tucker2" else (min(c_in * kh, c_out * kw),)
    layer = LowRankConv2d.from_conv(conv, method, ranks)
    x = torch.randn(2, c_in, 11, 13)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES[:2])
def test_tucker2_matches_the_naive_reference(geometry):
    conv = nn.Conv2d(**geometry)
    c_in = conv.in_channels
    layer = LowRankConv2d.from_conv(conv, "tucker2", (3, 2))
    expected = ref.tucker2_reconstruction(conv.weight.detach().double().numpy(), 3, 2)
    np.testing.assert_allclose(layer.full_weight().detach().double().numpy(), expected, atol=1e-5)
    # the three stages compute the conv with the reconstructed kernel (stride, padding, dilation kept)
    x = torch.randn(2, c_in, 11, 13)
    want = nn.functional.conv2d(x, torch.from_numpy(expected).float(), conv.bias, conv.stride, conv.padding,
                                conv.dilation)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    kernel = conv.weight[0, 0].numel()
    assert sum(s.weight.numel() for s in layer.stages) == c_in * 2 + 2 * 3 * kernel + 3 * conv.out_channels


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_spatial_svd_matches_the_naive_reference(geometry):
    conv = nn.Conv2d(**geometry)
    layer = LowRankConv2d.from_conv(conv, "spatial", (2,))
    expected = ref.spatial_reconstruction(conv.weight.detach().double().numpy(), 2)
    np.testing.assert_allclose(layer.full_weight().detach().double().numpy(), expected, atol=1e-5)
    x = torch.randn(2, conv.in_channels, 11, 13)
    want = nn.functional.conv2d(x, torch.from_numpy(expected).float(), conv.bias, conv.stride, conv.padding,
                                conv.dilation)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


def test_a_1x1_conv_is_its_channel_svd():
    conv = nn.Conv2d(12, 9, 1, stride=2, padding=1)
    layer = LowRankConv2d.from_conv(conv, "spatial", (4,))
    expected = ref.truncated(conv.weight.detach().double()[:, :, 0, 0].numpy(), 4)
    np.testing.assert_allclose(layer.full_weight().detach().double()[:, :, 0, 0].numpy(), expected, atol=1e-5)
    x = torch.randn(1, 12, 6, 6)
    want = nn.functional.conv2d(x, torch.from_numpy(expected).float()[:, :, None, None], conv.bias, 2, 1)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
