"""Fuzz slimkit.load with mutated artifacts and print the outcome classes (see tests/security/fuzz.py).

    python scripts/fuzz_artifacts.py --cases 5000 --seed 1

Uses atheris (coverage-guided) when it is installed and --atheris is given, else the seeded mutation
loop; exits 1 if any case raised something other than a SlimkitError or failed at its first forward.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.security.fuzz import fuzz, mutate, run_case, seed_artifacts  # noqa: E402


def _atheris(folder: Path) -> None:
    import random

    import atheris
    import torch

    from slimkit import load

    seeds = []
    for path, x in seed_artifacts(folder / "seeds"):
        with torch.no_grad():
            seeds.append((path, (path / "slimkit.json").read_bytes(), (path / "model.safetensors").read_bytes(), x,
                          load(path)(x)))

    def one(data: bytes) -> None:
        rng = random.Random(data)
        _, meta, weights, x, expected = rng.choice(seeds)
        _, meta, weights = mutate(rng, meta, weights)
        outcome = run_case(folder / "case", meta, weights, x, expected)
        if outcome.startswith(("crash", "forward")):
            raise RuntimeError(outcome)

    atheris.Setup(sys.argv[:1], one)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atheris", action="store_true", help="coverage-guided with atheris (runs until stopped)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        if args.atheris:
            _atheris(Path(folder))
            return 0
        start = time.perf_counter()
        counts, failures = fuzz(Path(folder), args.cases, args.seed)
    print(f"{args.cases} cases, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    for outcome, count in counts.most_common():
        print(f"  {outcome:<24} {count}")
    for case, kind, outcome, seed_name in failures[:20]:
        print(f"  failing case {case}: {kind} of {seed_name} -> {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
