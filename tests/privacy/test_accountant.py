import math

import numpy as np
import pytest

from slimkit.errors import UserInputError
from slimkit.privacy.accountant import (DEFAULT_ORDERS, RDPAccountant, epsilon, epsilon_floor, epsilon_from_rdp,
                                        noise_for_epsilon, rdp_sampled_gaussian)
from tests.reference import privacy as ref

SETTINGS = [(256 / 60000, 1.1), (0.2, 2.0), (0.01, 0.7)]


@pytest.mark.parametrize("q, sigma", SETTINGS)
def test_integer_orders_equal_the_binomial_sum(q, sigma):
    orders = [2, 3, 8, 32, 63]
    got = rdp_sampled_gaussian(q, sigma, orders)
    want = [ref.rdp_binomial(q, sigma, a) for a in orders]
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("q, sigma, alpha", [(256 / 60000, 1.1, 1.5), (0.2, 2.0, 3.7), (0.01, 0.7, 20.5)])
def test_fractional_orders_equal_the_integral_by_quadrature(q, sigma, alpha):
    got = rdp_sampled_gaussian(q, sigma, [alpha])[0]
    assert got == pytest.approx(ref.rdp_quadrature(q, sigma, alpha), rel=1e-9)


def test_conversion_equals_the_reference():
    rdp = rdp_sampled_gaussian(0.01, 1.0, DEFAULT_ORDERS) * 1000
    got, _ = epsilon_from_rdp(rdp, DEFAULT_ORDERS, 1e-5)
    assert got == pytest.approx(float(ref.epsilon_balle(list(rdp), DEFAULT_ORDERS, 1e-5)), rel=1e-12)


def test_tf_privacy_published_example():
    # compute_dp_sgd_privacy's docstring: --N=60000 --batch_size=256 --noise_multiplier=1.12 --epochs=60
    # --delta=1e-5 "satisfies (2.92, 1e-5)-DP"; that release used these orders and eps = rdp - log(delta)/(a-1).
    orders = [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + list(range(5, 64)) + [128, 256, 512]
    steps = math.ceil(60 * 60000 / 256)
    got = epsilon(1.12, 256 / 60000, steps, 1e-5, orders=orders, conversion="classic")
    assert round(got, 2) == 2.92


@pytest.mark.parametrize("q, sigma, steps, opacus", [
    (256 / 60000, 1.1, 14063, 2.5966555286883684), (0.2, 2.0, 300, 10.077291731607108),
    (0.01, 0.7, 5000, 10.804941430507059)])
def test_equals_opacus(q, sigma, steps, opacus):
    # figures printed by opacus 1.6.0: RDPAccountant's compute_rdp + get_privacy_spent, delta 1e-5, default alphas
    assert epsilon(sigma, q, steps, 1e-5) == pytest.approx(opacus, rel=1e-6)


def test_edge_rates():
    np.testing.assert_allclose(rdp_sampled_gaussian(1.0, 2.0, [2, 4.5]), [2 / 8, 4.5 / 8])
    assert rdp_sampled_gaussian(0.0, 1.0, [2]).tolist() == [0.0]
    assert math.isinf(epsilon(0.0, 0.01, 10, 1e-5))


def test_calibrated_noise_is_the_smallest_that_meets_the_target():
    q, steps, delta = 0.02, 500, 1e-5
    sigma = noise_for_epsilon(3.0, q, steps, delta)
    assert epsilon(sigma, q, steps, delta) <= 3.0
    assert epsilon(sigma * 0.997, q, steps, delta) > 3.0


def test_unreachable_target_names_the_smallest_reachable_epsilon():
    floor = epsilon_floor(1e-5)
    with pytest.raises(UserInputError, match=r"unreachable.*smallest reachable epsilon is 0\.1"):
        noise_for_epsilon(floor / 2, 0.01, 100, 1e-5)


def test_accountant_composes_runs():
    accountant = RDPAccountant()
    accountant.step(1.0, 0.01, steps=300)
    accountant.step(1.0, 0.01, steps=200)
    assert accountant.steps == 500 and len(accountant.history) == 1
    assert accountant.epsilon(1e-5) == pytest.approx(epsilon(1.0, 0.01, 500, 1e-5))
    accountant.step(2.0, 0.05, steps=100)
    rdp = rdp_sampled_gaussian(0.01, 1.0) * 500 + rdp_sampled_gaussian(0.05, 2.0) * 100
    assert accountant.epsilon(1e-5) == pytest.approx(epsilon_from_rdp(rdp, DEFAULT_ORDERS, 1e-5)[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise_multiplier=1.0, sample_rate=1.5, steps=1, delta=1e-5), "sample rate=1.5"),
    (dict(noise_multiplier=-1.0, sample_rate=0.1, steps=1, delta=1e-5), "noise multiplier=-1"),
    (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=0.0), "delta=0"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        epsilon(**kwargs)
