"""Naive references for the privacy accountant, in mpmath at 50 digits, from the definitions.

A_alpha = E_{z ~ mu0} [(mu(z) / mu0(z))^alpha], mu0 = N(0, sigma^2), mu = (1 - q) mu0 + q N(1, sigma^2)
(Mironov, Talwar and Zhang 2019). Integer orders: the binomial expansion summed term by term.
Any order: the integral itself by numerical quadrature, which shares nothing with the series.
"""

from __future__ import annotations

import mpmath

mpmath.mp.dps = 50


def rdp_binomial(q: float, sigma: float, alpha: int) -> float:
    """RDP of one step at an integer order: log(sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k)/(2 sigma^2))) / (a-1)."""
    q, sigma = mpmath.mpf(q), mpmath.mpf(sigma)
    total = mpmath.fsum(mpmath.binomial(alpha, k) * (1 - q) ** (alpha - k) * q**k
                        * mpmath.exp((k * k - k) / (2 * sigma**2)) for k in range(alpha + 1))
    return float(mpmath.log(total) / (alpha - 1))


def rdp_quadrature(q: float, sigma: float, alpha: float) -> float:
    """RDP of one step at any order > 1, integrating mu0^(1-alpha) mu^alpha over the real line."""
    q, sigma, alpha = mpmath.mpf(q), mpmath.mpf(sigma), mpmath.mpf(alpha)

    def integrand(z):
        mu0 = mpmath.npdf(z, 0, sigma)
        mu = (1 - q) * mu0 + q * mpmath.npdf(z, 1, sigma)
        return mu0 ** (1 - alpha) * mu**alpha

    total = mpmath.quad(integrand, [-mpmath.inf, -10 * sigma, 0, 1, 10 * sigma + 1, mpmath.inf])
    return float(mpmath.log(total) / (alpha - 1))


def epsilon_balle(rdp: list[float], orders: list[float], delta: float) -> float:
    """min over orders of rdp - (log delta + log a) / (a - 1) + log((a - 1) / a) (Balle et al. 2020, Thm 21)."""
    return min(r - (mpmath.log(delta) + mpmath.log(a)) / (a - 1) + mpmath.log((a - 1) / a) for r, a in zip(rdp, orders))
