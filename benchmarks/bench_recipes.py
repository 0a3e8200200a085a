"""Accuracy-budget search vs every single-technique demo row, on the digits CNN and the GPT.

The budget: at most 1% of the baseline's metric lost (accuracy on the digits test split; bits per
byte on the pycorpus validation windows). A demo row "meets" it when its measured drop is within;
the target is an auto-searched model smaller in bytes than every row that meets it. Intel Neural
Compressor's accuracy-driven tuning (autotune over RTN weight-only configs, same budget, same
evaluation) runs beside it on the GPT when neural_compressor is importable.

    python benchmarks/bench_recipes.py [--trials 40] [--gpt-trials 20] [--gpt-method rtn|gptq] [--models cnn,gpt]

``--gpt-method gptq`` runs GPTQ for real in every GPT trial (several minutes on 2 cores); the default
searches with RTN.

The demo rows come from the demo's variant cache (built on the first run, as ``slimkit demo`` does).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import torch

from slimkit.demo import VARIANTS, _variant_artifact, machine_line
from slimkit.evaluation.tasks import get_task
from slimkit.io import artifact_bytes, load
from slimkit.models import zoo
from slimkit.recipes.search import SearchConfig, search

BUDGET = 0.01  # relative
# the CNN's layers are convolutions: int8 activations with 2-8 bit weights; the GPT: weight-only formats
OPTIONS = {"cnn": ("sparse50", "sparse75", "sparse90", "int8", "int4", "int3", "int2"),
           "gpt": ("int8", "int4", "int3")}


def quality(model, task) -> float:
    t = get_task(task)
    return t.quality(model)[t.metric]


def drop(base: float, value: float, task: str) -> float:
    """Relative quality loss (positive: worse)."""
    sign = 1 if get_task(task).higher_is_better else -1
    return sign * (base - value) / abs(base)


def rows_for(name: str, trials: int, method: str = "rtn") -> list[dict]:
    base_model = zoo.reference(name)
    task = "digits" if name == "cnn" else "pycorpus"
    base = quality(base_model, task)
    with tempfile.TemporaryDirectory() as tmp:
        from slimkit.io import save

        rows = [{"model": name, "technique": "baseline (fp32)", "value": base,
                 "bytes": artifact_bytes(save(base_model, tmp)), "seconds": 0.0}]
    for variant in VARIANTS[name]:
        start = time.perf_counter()
        folder = _variant_artifact(name, base_model, variant, False)
        rows.append({"model": f"{name}-{variant.suffix}", "technique": variant.technique,
                     "value": quality(load(folder), task), "bytes": artifact_bytes(folder),
                     "seconds": time.perf_counter() - start})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = search(copy.deepcopy(base_model), SearchConfig(max_drop=BUDGET, trials=trials,
                                                                options=OPTIONS[name], method=method), tmp)
        rows.append({"model": f"{name}-auto", "technique": f"auto search ({result.trials} trials, TPE"
                     f"{', GPTQ' if method == 'gptq' else ''})",
                     "value": result.after.value, "bytes": result.after.artifact_bytes,
                     "seconds": time.perf_counter() - start, "recipe": result.recipe.to_yaml()})
    if name == "gpt":
        rows += inc_rows(base_model, task)
    for row in rows:
        row["drop"] = drop(base, row["value"], task)
    return rows


def inc_rows(model, task: str) -> list[dict]:
    """Intel Neural Compressor's autotune over RTN weight-only configs, when it is installed."""
    try:
        from neural_compressor.torch.quantization import RTNConfig, TuningConfig, autotune
    except ImportError:
        return []
    configs = [RTNConfig(bits=b, group_size=32) for b in (2, 3, 4)] + [RTNConfig(bits=8, group_size=-1)]
    start = time.perf_counter()
    tuned = autotune(copy.deepcopy(model), TuningConfig(config_set=configs, tolerable_loss=BUDGET),
                     eval_fn=lambda m: -quality(m, task))
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        torch.save(tuned.state_dict(), path)  # INC's packed weight-only modules
        size = os.path.getsize(path)
    return [{"model": "gpt-inc", "technique": "Intel Neural Compressor autotune (RTN 2/3/4/8-bit)",
             "value": quality(tuned, task), "bytes": size, "seconds": seconds}]


def table(rows: list[dict]) -> str:
    auto = next(r for r in rows if r["model"].endswith("-auto"))
    lines = ["| model | technique | quality | drop | bytes | meets 1% | auto smaller? | seconds |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in rows:
        meets = r["drop"] <= BUDGET
        versus = "" if r is auto or not meets else ("yes" if auto["bytes"] < r["bytes"] else "**no**")
        lines.append(f"| {r['model']} | {r['technique']} | {r['value']:.4f} | {r['drop']:+.2%} | {r['bytes']:,} | "
                     f"{'yes' if meets else 'no'} | {versus} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="CNN search trials")
    parser.add_argument("--gpt-trials", type=int, default=20, help="GPT search trials")
    parser.add_argument("--gpt-method", choices=["rtn", "gptq"], default="rtn", help="GPT weight-only rounding")
    parser.add_argument("--models", default="cnn,gpt")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(machine_line(2))
    for name in args.models.split(","):
        rows = rows_for(name, args.gpt_trials if name == "gpt" else args.trials,
                        args.gpt_method if name == "gpt" else "rtn")
        print(f"\n### {name}: budget {BUDGET:.0%} of the baseline's metric\n\n{table(rows)}")
        auto = rows[-1] if not rows[-1]["model"].endswith("inc") else rows[-2]
        print(f"\nchosen recipe:\n```yaml\n{auto.get('recipe', '')}```")


if __name__ == "__main__":
    main()
