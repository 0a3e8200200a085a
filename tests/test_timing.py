import types

import pytest

import slimkit.timing
from slimkit.timing import latency_ms


class ScriptedCall:
    """A call that takes the next scripted duration (ms) on a fake clock: timing without timing noise."""

    def __init__(self, monkeypatch, durations_ms):
        self.now, self.durations, self.calls = 0.0, list(durations_ms), 0
        monkeypatch.setattr(slimkit.timing, "time", types.SimpleNamespace(perf_counter=lambda: self.now))

    def __call__(self):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)] / 1e3
        self.calls += 1


def test_an_undisturbed_round_is_its_median_and_times_nothing_more(monkeypatch):
    call = ScriptedCall(monkeypatch, [5.0, 5.0] + [1.0, 1.2, 1.1, 1.3, 1.0, 1.4, 1.1])
    assert latency_ms(call) == pytest.approx(1.1)
    assert call.calls == 2 + 7


def test_a_burst_of_load_over_a_whole_round_is_timed_again(monkeypatch):
    # the warm-up and the whole first round inside a burst (median 20 ms), then the model's own 0.07 ms
    call = ScriptedCall(monkeypatch, [20.0] * 5 + [0.07, 20.0, 20.0, 20.0] + [0.07])
    assert latency_ms(call) == pytest.approx(0.07)
    assert call.calls == 2 + 7 + 7


def test_load_that_never_settles_gives_the_lowest_round_median_after_max_rounds(monkeypatch):
    rounds = [[0.1] + [9.0] * 6, [3.0] * 4 + [0.1] * 3, [5.0] * 7]  # round medians 9, 3, 5: all above 1.5 x 0.1
    call = ScriptedCall(monkeypatch, [1.0, 1.0] + [t for r in rounds for t in r])
    assert latency_ms(call, max_rounds=3) == pytest.approx(3.0)
    assert call.calls == 2 + 3 * 7


class Clock:
    """A fake clock two calls share; each call advances it by its own scripted durations (ms)."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(slimkit.timing, "time", types.SimpleNamespace(perf_counter=lambda: self.now))

    def call(self, durations_ms):
        durations = iter(durations_ms)

        def run():
            self.now += next(durations) / 1e3
        return run


def test_paired_timing_cancels_a_burst_that_slows_both_calls_of_a_pair(monkeypatch):
    from slimkit.timing import paired_speedup

    clock = Clock(monkeypatch)
    load = [1, 1, 30, 30, 30, 1, 1, 1, 80, 1, 1, 1, 1, 1, 1, 1, 1]  # per pair: a burst slows both calls 30-80x
    variant = clock.call([0.5 * f for f in load])
    base = clock.call([1.0 * f for f in load])
    result = paired_speedup(variant, base, pairs=15)
    assert result["median"] == pytest.approx(2.0) and result["q1"] == pytest.approx(2.0)
    assert result["q3"] == pytest.approx(2.0) and not result["noisy"] and result["pairs"] == 15
    # timed one after the other instead, the burst would have landed in one of the two medians only


@pytest.mark.parametrize("q1, median, q3, noisy", [
    (1.6, 1.8, 2.0, False),   # a clear speedup
    (0.9, 1.05, 1.2, True),   # straddles 1.0: faster or slower is not settled
    (1.1, 1.3, 1.6, True),    # spread 0.5 wider than the effect 0.3
    (0.45, 0.5, 0.55, False),  # a clear slowdown
])
def test_noisy_ratios(q1, median, q3, noisy):
    from slimkit.timing import is_noisy

    assert is_noisy(q1, median, q3) is noisy
