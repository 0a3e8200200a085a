"""The sensitivity-guided part of the search, run before TPE: a chain of ever harsher configurations
ordered by each layer's measured drop per byte saved, and a bisection along it with real proxy trials.

The sensitivity pass measures every (layer, option) alone: its quality drop and the bytes of the model
with that change. The chain starts all-float and each link makes the one change that costs the least
measured drop per byte saved (a drop below zero counts as zero), until every layer holds the option
that saves most. Drops do not add up exactly, so the bisection measures links of the chain as trials
and finds the harshest one within budget in about log2(links) trials.

>>> chain = greedy_chain(space.layers, found)  # found: sensitivity()'s drops, distortions, bytes  # doctest: +SKIP
>>> best = bisect_chain(chain, budget, lambda choice: measured_drop(choice), max_evals=8)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable


def greedy_chain(layers: dict[str, tuple[str, ...]], found: dict) -> list[tuple[dict[str, str], float]]:
    """[(choice, summed quality drop of its options alone)], mildest first; each link changes one layer.

    ``layers``: {layer: options, "float" first}; ``found``: sensitivity()'s {"drop"|"distortion"|"bytes":
    {layer: {option: value}}} of each option alone. The cost of a change is its distortion (finer than
    the drop, which is often zero for several options of a classifier); a change that adds none costs 0.

    >>> greedy_chain({"a": ("float", "int8", "int4")}, {"drop": {"a": {"int8": 0.0, "int4": 0.1}},
    ...     "distortion": {"a": {"int8": 0.001, "int4": 0.2}}, "bytes": {"a": {"float": 900, "int8": 300, "int4": 200}}})
    [({'a': 'int8'}, 0.0), ({'a': 'int4'}, 0.1)]
    """
    drops, costs, sizes = found["drop"], found["distortion"], found["bytes"]
    current = {n: "float" for n in layers}
    chain = []
    while True:
        best = None
        for name, options in layers.items():
            now = current[name]
            for option in options[1:]:
                gain = sizes[name][now] - sizes[name][option]
                if gain <= 0:
                    continue
                key = ((max(costs[name][option], 0.0) - max(costs[name].get(now, 0.0), 0.0)) / gain, -gain)
                if best is None or key < best[0]:
                    best = (key, name, option)
        if best is None:
            return chain
        current[best[1]] = best[2]
        total = sum(max(drops[n].get(o, 0.0), 0.0) for n, o in current.items())
        chain.append(({n: o for n, o in current.items() if o != "float"}, total))


def bisect_chain(chain: list[tuple[dict[str, str], float]], budget: float, measure: Callable[[dict], float | None],
                 max_evals: int) -> int:
    """Index of the harshest link found whose measured drop is within ``budget`` (-1: none).

    The first probe is the harshest link whose summed drop fits the budget; then bisection, assuming
    harsher links lose more. ``measure(choice)`` returns the drop (None: no trials left).
    """
    low, high = -1, len(chain) - 1
    probe = max((i for i, (_, total) in enumerate(chain) if total <= budget), default=0)
    for _ in range(max_evals):
        if low >= high:
            break
        drop = measure(chain[probe][0])
        if drop is None:
            break
        if drop <= budget:
            low = probe
        else:
            high = probe - 1
        probe = (low + high + 1) // 2
    return low
