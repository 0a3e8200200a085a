import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.quantization.activation.observers import (
    BINS,
    LEVELS,
    entropy_threshold_bins,
    make_observer,
    range_qparams,
)
from tests.reference.activation import entropy_threshold_bins as naive_entropy
from tests.reference.activation import mse_threshold, rounding_error


def batches(rows: int = 64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(rows, 32, generator=g) * (1 + i) + 0.5 for i in range(4)]


def test_minmax_is_the_range_over_all_batches():
    obs = make_observer("minmax")
    for x in batches():
        obs.observe(x)
    everything = torch.cat(batches())
    assert obs.range() == (everything.min().item(), everything.max().item())


def test_moving_average_follows_the_recurrence():
    obs, low, high = make_observer("moving_average", momentum=0.1), None, None
    for x in batches():
        obs.observe(x)
        lo, hi = x.min().item(), x.max().item()
        low, high = (lo, hi) if low is None else (low + 0.1 * (lo - low), high + 0.1 * (hi - high))
    assert obs.range() == pytest.approx((low, high), rel=1e-6)


@pytest.mark.parametrize("count", [1, 4])
def test_percentile_matches_torch_quantile_within_the_histogram_resolution(count):
    obs = make_observer("percentile", percentile=99.0)
    data = batches(rows=4096)[:count]  # dense enough that samples lie within a bin of each other at p99
    for x in data:
        obs.observe(x)
    magnitude = torch.cat(data).abs().flatten()
    expected = torch.quantile(magnitude, 0.99).item()
    # one bin of resolution, plus up to one bin per widening of the range (old counts are re-binned)
    tolerance = count * magnitude.max().item() / BINS
    low, high = obs.range()
    assert high == pytest.approx(expected, abs=tolerance)
    assert low == pytest.approx(-expected, abs=tolerance)


def test_histogram_widening_keeps_every_count():
    obs = make_observer("entropy")
    for x in batches():
        obs.observe(x)
    assert obs.counts.sum().item() == sum(x.numel() for x in batches())


def test_mse_picks_the_threshold_a_brute_force_search_picks():
    x = torch.randn(20000) ** 3  # heavy tails: clipping the rare large values pays off
    obs = make_observer("mse")
    obs.observe(x)
    step = obs.edge / BINS
    candidates = [stop * step for stop in range(BINS // 16, BINS + 1, BINS // 64)]
    best = mse_threshold(x, candidates, 127)
    # the histogram's error estimate is approximate, so compare the error its choice actually gives
    low, high = obs.range()
    assert rounding_error(x, max(-low, high)) <= 1.02 * rounding_error(x, best)
    assert max(-low, high) < 0.95 * x.abs().max().item()


def test_entropy_matches_the_naive_kl_search():
    g = torch.Generator().manual_seed(1)
    counts = torch.histc(torch.randn(50000, generator=g).abs() ** 1.5, 512, 0, 8)
    assert entropy_threshold_bins(counts, levels=LEVELS) == naive_entropy(counts.tolist(), LEVELS, 16)


def test_range_qparams_are_the_formats_ones():
    scale, zero = range_qparams(-1.0, 3.0, symmetric=False)
    assert scale.item() == pytest.approx(4.0 / 255) and zero.item() == round(1.0 / (4.0 / 255))
    scale, zero = range_qparams(-1.0, 3.0, symmetric=True)
    assert scale.item() == pytest.approx(3.0 / 127) and zero is None


def test_an_observer_without_data_and_nan_inputs_are_errors():
    with pytest.raises(UserInputError, match="saw no data"):
        make_observer("minmax").range()
    with pytest.raises(UserInputError, match="NaN/Inf activations"):
        make_observer("percentile").observe(torch.tensor([1.0, float("nan")]))
    with pytest.raises(UserInputError, match="unknown observer"):
        make_observer("kl")
