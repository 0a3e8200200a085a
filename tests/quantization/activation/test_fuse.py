import copy

import torch
from torch import nn

from slimkit import load, save
from slimkit.models import MLP, ResNet, ResNetConfig
from slimkit.quantization import fuse
from slimkit.quantization.activation.fuse import Folded, FusedConv2d, FusedLinear


def trained_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_fused_cnn_equals_the_unfused_one():
    model = trained_statistics(ResNet(ResNetConfig(widths=(8, 16))))
    x = torch.randn(4, 1, 8, 8)
    fused, notes = fuse(copy.deepcopy(model))
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert isinstance(fused.stem[0], FusedConv2d) and fused.stem[0].relu
    assert isinstance(fused.stem[1], Folded) and isinstance(fused.blocks[0].bn1, Folded)
    assert "stem.0: fused + stem.1 + stem.2" in notes


def test_linear_relu_fuses_and_the_fused_model_round_trips(tmp_path):
    model, x = MLP().eval(), torch.rand(8, 1, 8, 8)
    fused, _ = fuse(copy.deepcopy(model))
    assert isinstance(fused.net[1], FusedLinear) and fused.net[1].relu and isinstance(fused.net[2], Folded)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(load(save(fused, tmp_path))(x), fused(x))


def test_an_untraceable_model_is_left_unfused_with_the_reason():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x)) if x.sum() > 0 else x

    model, notes = fuse(DataDependent())
    assert isinstance(model.fc, nn.Linear) and not isinstance(model.fc, FusedLinear)
    assert notes and "torch.fx cannot trace DataDependent" in notes[0]


def test_a_relu_module_called_twice_is_never_deleted_by_fusion():
    # torchvision's BasicBlock calls one self.relu after bn1 and again after the residual add: folding
    # it into conv1 and replacing the module by an identity would delete the second ReLU too
    from tests.reference.vision import tiny_resnet, trained_statistics

    model = trained_statistics(tiny_resnet())
    x = torch.randn(4, 3, 32, 32)
    fused, notes = fuse(copy.deepcopy(model))
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert isinstance(fused.layer1[0].relu, nn.ReLU) and not fused.layer1[0].conv1.relu
    assert isinstance(fused.layer1[0].bn1, Folded)
    assert any("layer1.0.relu" in n and "called 2 times" in n for n in notes)
