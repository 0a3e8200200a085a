"""300 seeded mutations of small artifacts (a few seconds): every one refused with a SlimkitError or loaded
and run; none raises another exception, none fails at its first forward. scripts/fuzz_artifacts.py runs more."""

import warnings

from tests.security.fuzz import fuzz


def test_seeded_mutations_are_refused_or_load_and_run(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts, failures = fuzz(tmp_path, cases=300, seed=20261207)
    assert not failures, failures[:5]
    assert counts["refused"] > 200 and sum(counts.values()) == 300 and not counts["refused:last-resort"]
