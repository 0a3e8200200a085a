"""The sensitivity-guided chain and its bisection, against brute force on small made-up sensitivities."""

import itertools

import pytest

from slimkit.recipes.greedy import bisect_chain, greedy_chain

LAYERS = {"a": ("float", "int8", "int4", "int3"), "b": ("float", "int8", "int4"), "c": ("float", "sparse50")}
FOUND = {  # distortion and bytes of each option alone; the model is 1,000 bytes float
    "drop": {"a": {"int8": 0.0, "int4": 0.002, "int3": 0.02}, "b": {"int8": 0.0, "int4": 0.0}, "c": {"sparse50": 0.01}},
    "distortion": {"a": {"int8": 0.001, "int4": 0.01, "int3": 0.2}, "b": {"int8": 0.0, "int4": 0.05},
                   "c": {"sparse50": 0.03}},
    "bytes": {"a": {"float": 1000, "int8": 850, "int4": 800, "int3": 790},
              "b": {"float": 1000, "int8": 700, "int4": 600}, "c": {"float": 1000, "sparse50": 900}},
}


def _size(choice):
    return 1000 - sum(1000 - FOUND["bytes"][n][o] for n, o in choice.items())


def _distortion(choice):
    return sum(FOUND["distortion"][n][o] for n, o in choice.items())


def test_each_link_changes_one_layer_and_takes_the_cheapest_distortion_per_byte():
    chain = [choice for choice, _ in greedy_chain(LAYERS, FOUND)]
    # by hand, distortion per byte: b int8 0, a int8 0.001/150, a int4 0.009/50, c 0.03/100, b int4 0.05/100,
    # a int3 0.19/10
    assert chain == [{"b": "int8"}, {"a": "int8", "b": "int8"}, {"a": "int4", "b": "int8"},
                     {"a": "int4", "b": "int8", "c": "sparse50"}, {"a": "int4", "b": "int4", "c": "sparse50"},
                     {"a": "int3", "b": "int4", "c": "sparse50"}]
    assert all(len(set(x.items()) ^ set(y.items())) <= 2 for x, y in zip(chain, chain[1:]))
    # every link is on the brute-force frontier: no choice is smaller with less summed distortion
    every = [dict(zip(LAYERS, c)) for c in itertools.product(*LAYERS.values())]
    every = [{n: o for n, o in c.items() if o != "float"} for c in every]
    for link in chain:
        assert not any(_size(c) < _size(link) and _distortion(c) < _distortion(link) - 1e-12 for c in every)


def test_the_chain_carries_the_summed_drops():
    totals = [total for _, total in greedy_chain(LAYERS, FOUND)]
    assert totals == pytest.approx([0.0, 0.0, 0.002, 0.012, 0.012, 0.03])


@pytest.mark.parametrize("first_bad", [0, 1, 7, 23, 40])
def test_bisection_finds_the_last_link_within_budget_in_log_steps(first_bad):
    chain = [({"x": str(i)}, i * 0.001) for i in range(40)]  # the summed drops guess the first probe: link 10
    calls = []

    def measure(choice):
        calls.append(int(choice["x"]))
        return 0.0 if int(choice["x"]) < first_bad else 1.0

    found = bisect_chain(chain, budget=0.01, measure=measure, max_evals=40)
    assert found == first_bad - 1  # -1: not even the first link fits
    assert len(calls) == len(set(calls)) <= 7  # ceil(log2(41)) = 6, plus the first probe


def test_bisection_stops_when_the_trials_run_out():
    chain = [({"x": str(i)}, 0.0) for i in range(8)]
    assert bisect_chain(chain, 0.01, lambda choice: None, max_evals=8) == -1
    assert bisect_chain(chain, 0.01, lambda choice: 0.0, max_evals=0) == -1
