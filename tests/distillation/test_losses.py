import pytest
import torch
import torch.nn.functional as F

from slimkit.distillation import losses
from tests.reference import distill as reference


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_matches_the_formula(temperature):
    s, t = torch.randn(3, 5, 7), torch.randn(3, 5, 7) * 2
    assert losses.kd_loss(s, t, temperature).item() == pytest.approx(reference.kd(s, t, temperature), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0, 8.0])
def test_kd_gradient_is_t_times_probability_gap(temperature):
    # The T^2 factor: d/dz_s = T * (softmax(z_s/T) - softmax(z_t/T)), so the gradient does not shrink as T grows.
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10)
    losses.kd_loss(s, t, temperature).backward()
    expected = temperature * (F.softmax(s.detach() / temperature, -1) - F.softmax(t / temperature, -1))
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-6)


def test_kd_loss_is_zero_for_equal_logits_and_refuses_shape_mismatch():
    z = torch.randn(2, 6)
    assert losses.kd_loss(z, z.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"student logits \(2, 6\) and teacher logits \(2, 5\)"):
        losses.kd_loss(z, torch.randn(2, 5), 2.0)


def test_relation_losses_match_the_papers():
    s, t = torch.randn(6, 4), torch.randn(6, 3)
    assert losses.rkd_distance(s, t).item() == pytest.approx(reference.rkd_distance(s, t), rel=1e-4)
    assert losses.rkd_angle(s, t).item() == pytest.approx(reference.rkd_angle(s, t), rel=1e-4, abs=1e-7)
    assert losses.similarity_preserving(s, t).item() == pytest.approx(reference.similarity_preserving(s, t),
                                                                       rel=1e-4)


def test_relation_losses_ignore_scale_and_rotation():
    # RKD compares relative geometry: a rotated, rescaled copy of the teacher costs nothing.
    t = torch.randn(8, 5)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    s = 3.0 * t @ rotation
    assert losses.rkd_distance(s, t).item() < 1e-6
    assert losses.rkd_angle(s, t).item() < 1e-6
    assert losses.similarity_preserving(s, t).item() < 1e-6  # Gram rows are normalised: scale drops out


def test_attention_map_and_transfer():
    feature = torch.zeros(1, 3, 2, 2)
    feature[0, :, 0, 0] = 2.0  # all energy in one spatial position
    torch.testing.assert_close(losses.attention_map(feature), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    tokens = torch.randn(2, 5, 8)
    expected = F.normalize(tokens.pow(2).mean(-1), dim=1)
    torch.testing.assert_close(losses.attention_map(tokens), expected)
    # widths may differ: the maps are compared, not the channels
    assert losses.attention_transfer(torch.randn(2, 5, 4), torch.randn(2, 5, 16)).shape == ()
    assert losses.attention_transfer(tokens, tokens * 3).item() == pytest.approx(0.0, abs=1e-10)


def test_feature_losses():
    a, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    assert losses.feature_loss(a, b, "mse").item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    assert losses.feature_loss(a, 2 * a, "cosine").item() == pytest.approx(0.0, abs=1e-6)
