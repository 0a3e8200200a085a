
import pytest
import torch
from torch import nn

from slimkit import load, save
from slimkit.errors import UserInputError
from slimkit.formats import dequantize, quantize
from slimkit.models import MLP, ResNet, ResNetConfig
from slimkit.quantization import ActivationQuantConfig, Int8Conv2d, QATSchedule, convert, prepare_qat
from slimkit.quantization.activation.fuse import Folded
from slimkit.quantization.activation.qat import QATConv2d, fake_quant, lsq_quantize
from slimkit.training import TrainConfig, random_examples, train


def test_fake_quant_forward_equals_quantize_then_dequantize():
    x = torch.randn(6, 40)
    scale = x.abs().amax(1, keepdim=True) / 7
    expected = dequantize(quantize(x, "int4", granularity="channel", axis=0))
    assert torch.equal(fake_quant(x, scale, None, -7, 7), expected)
    torch.testing.assert_close(lsq_quantize(x, scale, None, -7, 7), expected, rtol=1e-6, atol=1e-6)
    enc = quantize(x, "int8", granularity="tensor", symmetric=False)  # uint8 with a zero point, as convs take
    assert torch.equal(fake_quant(x, enc.scales().reshape(()), enc.zero_point.reshape(()), 0, 255), dequantize(enc))


def test_ste_gradient_passes_inside_the_range_and_stops_outside():
    x = torch.tensor([-3.0, -0.5, 0.2, 0.9, 2.5], requires_grad=True)
    fake_quant(x, torch.tensor(1 / 127), None, -127, 127).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_lsq_scale_gradient_follows_the_paper():
    # d/ds of round(x/s)*s is round(x/s) - x/s inside the range and +-qmax at the clip; scaled by g = 1/sqrt(N qmax)
    x = torch.tensor([0.26, -0.74, 5.0])
    scale = torch.tensor(0.1, requires_grad=True)
    lsq_quantize(x, scale, None, -7, 7).sum().backward()
    v = x / 0.1
    expected = ((v.round() - v)[:2].sum() + 7) / (3 * 7) ** 0.5
    assert scale.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def digits_like(n, batch=32):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(batch, 1, 8, 8, generator=g) * 16 for _ in range(n)]


def test_converted_model_computes_what_the_fake_quant_model_simulated():
    model = ResNet(ResNetConfig(widths=(8, 16))).eval()
    config = ActivationQuantConfig(mode="qat", weight_bits=4)
    prepare_qat(model, config)
    with torch.no_grad():
        for x in digits_like(3):
            model(x)  # training mode: the observers see these batches
    model.eval()
    x = digits_like(1)[0]
    simulated = model(x)
    convert(model)
    assert sum(isinstance(m, Int8Conv2d) for m in model.modules()) == 10
    # same grids, same integers; only float summation order differs between the kernels
    torch.testing.assert_close(model(x), simulated, rtol=1e-3, atol=1e-3 * simulated.abs().max().item())


def test_schedule_folds_batchnorm_and_freezes_observers_at_their_steps(tmp_path):
    model = ResNet(ResNetConfig(widths=(8, 16)))
    config = ActivationQuantConfig(mode="qat", weight_bits=4, fold_bn_step=2, freeze_observers_step=3, lsq=True)
    prepare_qat(model, config)
    assert isinstance(model.blocks[0].bn1, nn.BatchNorm2d)
    seen = {}

    class Spy:
        def on_step_end(self, state):
            seen[state.step] = (isinstance(model.blocks[0].bn1, Folded), model.stem[0].frozen)

    x, y = torch.cat(digits_like(4)), torch.randint(0, 10, (128,))
    train(model, random_examples(x, y, 32, 0), TrainConfig(steps=4, lr=1e-3, warmup=1, threads=1),
          callbacks=[QATSchedule(config), Spy()])
    assert seen == {1: (False, False), 2: (True, False), 3: (True, True), 4: (True, True)}
    assert isinstance(model.stem[0], QATConv2d)
    convert(model)
    x = digits_like(1)[0]
    assert torch.equal(load(save(model, tmp_path))(x), model(x))


def test_qat_needs_the_qat_mode_and_a_training_observer():
    with pytest.raises(UserInputError, match="mode='qat'"):
        prepare_qat(MLP(), ActivationQuantConfig(mode="static"))
    with pytest.raises(UserInputError, match="'minmax' or 'moving_average'"):
        prepare_qat(MLP(), ActivationQuantConfig(mode="qat", observer="entropy"))
    with pytest.raises(UserInputError, match="needs training"):
        from slimkit import quantize
        quantize(MLP(), ActivationQuantConfig(mode="qat"))
