"""The RDP accountant of the sampled Gaussian mechanism (DP-SGD's step), and sigma calibration.

One DP-SGD step releases the sum of per-example gradients clipped to C plus N(0, sigma^2 C^2), on a
batch where each example was included with probability q. Its Rényi DP at order alpha is
log(A_alpha) / (alpha - 1) with (Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the
Sampled Gaussian Mechanism")

    A_alpha = E_{z ~ N(0, sigma^2)} [((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha]

in closed form for integer alpha (a binomial sum) and as two convergent series of Gaussian tail
terms for fractional alpha (their Section 3.3). RDP adds up over steps; the smallest epsilon over
the orders at a given delta comes from the conversion of Balle et al. 2020 (Theorem 21), as in
Opacus and TF Privacy today, or the classic ``rdp - log(delta) / (alpha - 1)`` of older releases.

>>> round(epsilon(noise_multiplier=1.1, sample_rate=256 / 60000, steps=14063, delta=1e-5), 2)
2.6
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from slimkit.errors import UserInputError

DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))
"""RDP orders searched for the best epsilon: the list Opacus and TF Privacy use, so figures compare."""
CONVERSIONS = ("balle2020", "classic")
_TERMS_PER_CHUNK = 512  # series terms evaluated at once per fractional order
_SERIES_CUTOFF = 36.0  # stop when a chunk's largest term is exp(-36) (~2e-16) below the running sum


def rdp_sampled_gaussian(sample_rate: float, noise_multiplier: float,
                         orders=DEFAULT_ORDERS) -> np.ndarray:
    """RDP of ONE step of the sampled Gaussian mechanism at each order (multiply by the number of steps).

    >>> rdp_sampled_gaussian(1.0, 2.0, [2.0, 4.0]).tolist()  # q = 1: the Gaussian mechanism, alpha / (2 sigma^2)
    [0.25, 0.5]
    """
    _check_mechanism(sample_rate, noise_multiplier)
    orders = np.asarray(orders, dtype=np.float64)
    if np.any(orders <= 1):
        raise UserInputError(f"RDP orders must all be > 1, got {orders[orders <= 1].tolist()}")
    if sample_rate == 0:
        return np.zeros_like(orders)
    if noise_multiplier == 0:
        return np.full_like(orders, np.inf)
    if sample_rate == 1:
        return orders / (2 * noise_multiplier**2)
    integer = np.array([float(a).is_integer() for a in orders])
    log_a = np.empty_like(orders)
    log_a[integer] = [_log_a_integer(sample_rate, noise_multiplier, int(a)) for a in orders[integer]]
    if not integer.all():
        log_a[~integer] = _log_a_fractional(sample_rate, noise_multiplier, orders[~integer])
    return log_a / (orders - 1)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    k = np.arange(alpha + 1, dtype=np.float64)
    log_terms = _log_binom(alpha, k) + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
    return float(special.logsumexp(log_terms))


def _log_a_fractional(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """A_alpha split at z0, where q * mu1 = (1 - q) * mu0: each side is a binomial series in the smaller
    ratio, and each term integrates a Gaussian over a half-line (log_ndtr keeps the tails exact).
    All orders at once, (orders, terms) arrays, chunk by chunk until every series has converged."""
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_pos = np.full(len(alphas), -np.inf)  # the binomial signs alternate past alpha: sum each sign apart
    log_neg = np.full(len(alphas), -np.inf)
    active, start = np.arange(len(alphas)), 0  # active: the orders whose series has not converged yet
    with np.errstate(divide="ignore"):
        while len(active):
            a = alphas[active, None]  # (A, 1)
            k = np.arange(start, start + _TERMS_PER_CHUNK, dtype=np.float64)[None, :]  # (1, K)
            j = a - k
            log_coef, sign = _log_binom(a, k), special.gammasgn(a - k + 1)
            below = (log_coef + k * math.log(q) + j * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
                     + special.log_ndtr((z0 - k) / sigma))
            above = (log_coef + j * math.log(q) + k * math.log1p(-q) + (j * j - j) / (2 * sigma**2)
                     + special.log_ndtr((j - z0) / sigma))
            terms, signs = np.concatenate([below, above], axis=1), np.concatenate([sign, sign], axis=1)
            log_pos[active] = np.logaddexp(log_pos[active],
                                           special.logsumexp(np.where(signs > 0, terms, -np.inf), axis=1))
            log_neg[active] = np.logaddexp(log_neg[active],
                                           special.logsumexp(np.where(signs < 0, terms, -np.inf), axis=1))
            start += _TERMS_PER_CHUNK
            converged = (start > alphas[active] + 1) & (terms.max(axis=1) < log_pos[active] - _SERIES_CUTOFF)
            active = active[~converged]
    return log_pos + np.log1p(-np.exp(log_neg - log_pos))


def _log_binom(alpha: float, k: np.ndarray) -> np.ndarray:
    """log |binom(alpha, k)| for real alpha (gammaln is log |Gamma| for negative arguments too)."""
    return special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)


def epsilon_from_rdp(rdp, orders, delta: float, conversion: str = "balle2020") -> tuple[float, float]:
    """The smallest epsilon over the orders at ``delta``, and the order that gives it.

    >>> epsilon_from_rdp([0.5], [2.0], 1e-5, conversion="classic")[0]  # 0.5 + log(1e5) / 1
    12.012925464970229
    """
    _check_delta(delta)
    if conversion not in CONVERSIONS:
        raise UserInputError(f"conversion={conversion!r} is not one of {', '.join(CONVERSIONS)}")
    rdp, orders = np.asarray(rdp, dtype=np.float64), np.asarray(orders, dtype=np.float64)
    if conversion == "classic":
        eps = rdp - math.log(delta) / (orders - 1)
    else:
        eps = rdp - (math.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(orders[best])


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
            orders=DEFAULT_ORDERS, conversion: str = "balle2020") -> float:
    """Epsilon of ``steps`` DP-SGD steps at ``delta`` (TF Privacy's compute_dp_sgd_privacy, Opacus's RDP).

    >>> round(epsilon(1.0, 0.01, 1000, 1e-5), 3)  # doctest: +SKIP
    """
    if steps < 0:
        raise UserInputError(f"steps={steps} cannot be negative")
    rdp = rdp_sampled_gaussian(sample_rate, noise_multiplier, orders) * steps
    return epsilon_from_rdp(rdp, orders, delta, conversion)[0]


def noise_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float, *,
                      orders=DEFAULT_ORDERS, conversion: str = "balle2020", tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier whose epsilon after ``steps`` is at most ``target_epsilon`` (bisection).

    Raises UserInputError naming the smallest reachable epsilon when the target is below it (with
    these orders, even infinite noise cannot go below ``epsilon_floor``).

    >>> round(noise_for_epsilon(3.0, 256 / 60000, 14063, 1e-5), 2)  # doctest: +SKIP
    """
    if not target_epsilon > 0:
        raise UserInputError(f"target epsilon={target_epsilon} must be positive")

    def eps(sigma: float) -> float:
        return epsilon(sigma, sample_rate, steps, delta, orders=orders, conversion=conversion)

    high = 1.0
    while eps(high) > target_epsilon:
        high *= 2
        if high > 2**12:
            floor = epsilon_floor(delta, orders, conversion)
            raise UserInputError(
                f"target epsilon={target_epsilon:g} is unreachable at delta={delta:g}: the smallest reachable "
                f"epsilon is {max(floor, eps(high)):.4g} (noise multiplier {high:g}) for {steps} steps at "
                f"sample rate {sample_rate:g}; raise the target, or raise delta")
    low = 0.0
    while high - low > tolerance * high:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= target_epsilon else (mid, high)
    return high


def epsilon_floor(delta: float, orders=DEFAULT_ORDERS, conversion: str = "balle2020") -> float:
    """Epsilon with infinite noise (RDP 0): what the conversion alone costs at ``delta`` with these orders."""
    return epsilon_from_rdp(np.zeros(len(orders)), orders, delta, conversion)[0]


@dataclass
class RDPAccountant:
    """Adds up the RDP of the steps taken (their noise and sample rate may change) and answers epsilon.

    >>> accountant = RDPAccountant()
    >>> accountant.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    >>> round(accountant.epsilon(1e-5), 2)  # doctest: +SKIP
    """

    orders: tuple[float, ...] = DEFAULT_ORDERS
    """RDP orders tracked."""
    history: list[tuple[float, float, int]] = field(default_factory=list)
    """(noise multiplier, sample rate, steps) runs, merged when consecutive settings repeat."""
    _per_step: dict = field(default_factory=dict, repr=False, compare=False)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            self.history[-1] = (noise_multiplier, sample_rate, self.history[-1][2] + steps)
        else:
            _check_mechanism(sample_rate, noise_multiplier)
            self.history.append((noise_multiplier, sample_rate, steps))

    @property
    def steps(self) -> int:
        return sum(run[2] for run in self.history)

    def rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for sigma, q, steps in self.history:
            if (sigma, q) not in self._per_step:  # computed once: epsilon is asked after every step
                self._per_step[sigma, q] = rdp_sampled_gaussian(q, sigma, self.orders)
            total += self._per_step[sigma, q] * steps
        return total

    def epsilon(self, delta: float, conversion: str = "balle2020") -> float:
        return epsilon_from_rdp(self.rdp(), self.orders, delta, conversion)[0]


def _check_mechanism(sample_rate: float, noise_multiplier: float) -> None:
    if not 0 <= sample_rate <= 1:
        raise UserInputError(f"sample rate={sample_rate} must lie in [0, 1] (batch size / dataset size)")
    if not noise_multiplier >= 0:
        raise UserInputError(f"noise multiplier={noise_multiplier} must be >= 0")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise UserInputError(f"delta={delta} must lie in (0, 1); 1e-5 or below 1/N is usual")
