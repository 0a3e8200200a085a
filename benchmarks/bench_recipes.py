"""Accuracy-budget search vs every single-technique demo row, on the digits CNN, the GPT and MiniLM.

The budget: at most 1% of the baseline's metric lost (accuracy on the digits test split; bits per
byte on the pycorpus validation windows; MiniLM's mean cosine to fp32 on its 400 sentences). A demo
row "meets" it when its measured drop is within; the target is an auto-searched model smaller in
bytes than every row that meets it. On the CNN a second search minimises measured latency. Intel
Neural Compressor's accuracy-driven tuning (autotune over RTN weight-only configs, same budget, same
evaluation) runs beside it on the GPT when neural_compressor is importable.

    python benchmarks/bench_recipes.py [--trials 40] [--latency-trials 12] [--gpt-trials 20] [--gpt-method gptq|rtn]
                                       [--minilm-trials 10] [--models cnn,gpt,minilm]

``--gpt-method gptq`` (the default) runs GPTQ for real in every GPT trial. Latency: median of 7
calls at the task's default batch (CNN 64 images, GPT 1 window, MiniLM 16 sentences), 2 threads.

The demo rows come from the demo's variant cache (built on the first run, as ``slimkit demo`` does).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import torch

from slimkit.demo import VARIANTS, _variant_artifact
from slimkit.machine import machine_line
from slimkit.models.tasks import get_task, infer_task
from slimkit.io import artifact_bytes, load
from slimkit.models import zoo
from slimkit.recipes.search import SearchConfig, search
from slimkit.timing import latency_ms

BUDGET = 0.01  # relative
# the CNN: every option (its layers are convolutions: int8 activations with 2-8 bit weights); the GPT and
# MiniLM: weight-only formats (their other options lose more than 1% alone without fine-tuning)
OPTIONS = {"cnn": None, "gpt": ("int8", "int4", "int3"), "minilm": ("int8", "int4")}


def quality(model, task) -> float:
    t = get_task(task)
    return t.quality(model)[t.metric]


def latency(model, task) -> float:
    t = get_task(task)
    return latency_ms(t.example_call(model.eval(), t.default_batch), threads=2)


def base_model(name: str):
    if name == "minilm":
        from slimkit.data import minilm

        return minilm().model
    return zoo.reference(name)


def drop(base: float, value: float, task: str) -> float:
    """Relative quality loss (positive: worse)."""
    sign = 1 if get_task(task).higher_is_better else -1
    return sign * (base - value) / abs(base)


def rows_for(name: str, trials: int, method: str = "rtn", latency_trials: int = 0) -> list[dict]:
    model = base_model(name)
    task = infer_task(model)
    base = quality(model, task)
    with tempfile.TemporaryDirectory() as tmp:
        from slimkit.io import save

        rows = [{"model": name, "technique": "baseline (fp32)", "value": base, "latency": latency(model, task),
                 "bytes": artifact_bytes(save(model, tmp)), "seconds": 0.0}]
    for variant in VARIANTS[name]:
        start = time.perf_counter()
        folder = _variant_artifact(name, model, variant, False)
        built = load(folder)
        rows.append({"model": f"{name}-{variant.suffix}", "technique": variant.technique,
                     "value": quality(built, task), "latency": latency(built, task), "bytes": artifact_bytes(folder),
                     "seconds": time.perf_counter() - start})
    searches = [("bytes", trials)] + ([("latency", latency_trials)] if latency_trials else [])
    for objective, count in searches:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            options = {"options": OPTIONS[name]} if OPTIONS[name] else {}
            result = search(copy.deepcopy(model), SearchConfig(max_drop=BUDGET, trials=count, method=method,
                                                               objective=objective, **options), tmp)
            rows.append({"model": f"{name}-auto" + ("-latency" if objective == "latency" else ""),
                         "technique": f"auto search, {objective} ({result.trials} trials"
                         f"{', GPTQ' if method == 'gptq' and name != 'cnn' else ''})",
                         "value": result.after.value, "bytes": result.after.artifact_bytes,
                         "latency": result.after.latency_ms,  # evaluate(): the task's default batch, 2 threads
                         "seconds": time.perf_counter() - start, "recipe": result.recipe.to_yaml()})
    if name == "gpt":
        rows += inc_rows(model, task)
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
             "value": quality(tuned, task), "latency": latency(tuned, task), "bytes": size, "seconds": seconds}]


def table(rows: list[dict]) -> str:
    auto = next(r for r in rows if r["model"].endswith("-auto"))
    lines = ["| model | technique | quality | drop | bytes | latency ms | meets 1% | auto smaller? | seconds |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in rows:
        meets = r["drop"] <= BUDGET
        versus = "" if "-auto" in r["model"] or not meets else ("yes" if auto["bytes"] < r["bytes"] else "**no**")
        lines.append(f"| {r['model']} | {r['technique']} | {r['value']:.4f} | {r['drop']:+.2%} | {r['bytes']:,} | "
                     f"{r['latency']:.2f} | {'yes' if meets else 'no'} | {versus} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="CNN search trials")
    parser.add_argument("--latency-trials", type=int, default=12, help="CNN latency search trials (0: none)")
    parser.add_argument("--gpt-trials", type=int, default=20, help="GPT search trials")
    parser.add_argument("--gpt-method", choices=["rtn", "gptq"], default="gptq", help="GPT weight-only rounding")
    parser.add_argument("--minilm-trials", type=int, default=10, help="MiniLM search trials")
    parser.add_argument("--models", default="cnn,gpt,minilm")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(machine_line(2))
    trials = {"cnn": args.trials, "gpt": args.gpt_trials, "minilm": args.minilm_trials}
    for name in args.models.split(","):
        start = time.perf_counter()
        rows = rows_for(name, trials[name], args.gpt_method if name == "gpt" else "rtn",
                        args.latency_trials if name == "cnn" else 0)
        print(f"\n### {name}: budget {BUDGET:.0%} of the baseline's metric ({time.perf_counter() - start:.0f} s)"
              f"\n\n{table(rows)}")
        for auto in (r for r in rows if "-auto" in r["model"]):
            print(f"\n{auto['model']} recipe:\n```yaml\n{auto['recipe']}```")


if __name__ == "__main__":
    main()
