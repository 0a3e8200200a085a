"""Pruning benchmarks side by side: digits CNN (unstructured 90% and structured 50%, with Torch-Pruning at the
same ratio), GPT at 50% one-shot (magnitude vs Wanda vs SparseGPT), MiniLM with 25% of heads and FFN removed.

    python benchmarks/bench_pruning.py            # slimkit rows (Torch-Pruning row when it imports)
    /tmp/peers/venv/bin/python benchmarks/bench_pruning.py   # the peer venv has torch-pruning installed

Prints markdown tables. The evaluate() rows time each model alone (median of 7 calls); the latency tables
after them time the models in turns, 30 calls each, and give the median and the fastest call, which a
busy CPU distorts least. On a shared CPU compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import torch


from slimkit.machine import machine_line
from slimkit.models.tasks import evaluate
from slimkit.evaluation.report import markdown_table
from slimkit.models.tasks import get_task, infer_task
from slimkit.io import load, save
from slimkit.models import zoo
from slimkit.pruning import PruneConfig, prune
from slimkit.recipes.prune import PruneRecipe, run_recipe, task_calibration
from slimkit.pruning.schedule import KeepMasks
from slimkit.timing import fixed_threads
from slimkit.training import TrainConfig, train

THREADS = 2
TIMED: dict[str, dict[str, object]] = {}  # section -> {row: zero-argument inference call}, timed interleaved
FINETUNE = TrainConfig(steps=300, lr=1e-3, threads=THREADS)
SPARSE_FINETUNE = TrainConfig(steps=200, lr=1e-3, threads=THREADS)


def measured(model, name, technique, baseline, tmp, section=None):
    """Save, reload and evaluate (bytes on disk, quality, latency) the way the demo does."""
    directory = save(model, f"{tmp}/{name}")
    loaded = load(directory)
    if section:
        task = get_task(infer_task(loaded))
        TIMED.setdefault(section, {})[name] = task.example_call(loaded, task.default_batch)
    return evaluate(loaded, name=name, technique=technique, baseline=baseline, artifact_dir=directory,
                    threads=THREADS)


@torch.no_grad()
def latency_table(calls: dict, rounds: int = 30) -> str:
    """Calls timed one after another in turns (a busy CPU slows them alike): median and fastest per model."""
    times = {name: [] for name in calls}
    with fixed_threads(THREADS):
        for call in calls.values():
            call()  # warm-up
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    base_median, base_min = statistics.median(next(iter(times.values()))), min(next(iter(times.values())))
    rows = [f"| model | median ms ({rounds} interleaved calls) | speedup | fastest ms | speedup |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name, t in times.items():
        rows.append(f"| {name} | {statistics.median(t):.3f} | {base_median / statistics.median(t):.2f}x | "
                    f"{min(t):.3f} | {base_min / min(t):.2f}x |")
    return "\n".join(rows)


def cnn_rows(tmp) -> list:
    base = zoo.reference("cnn")
    rows = [measured(base, "cnn", "baseline", None, tmp, "cnn")]
    for name, technique, recipe in [
        ("cnn-sparse90", "90% global magnitude + 200 steps", PruneRecipe(PruneConfig(sparsity=0.9, scope="global"),
                                                                        SPARSE_FINETUNE)),
        ("cnn-channels50", "50% channels, L1 (slimkit) + 300 steps", PruneRecipe(
            PruneConfig(structured=True, ratio=0.5), FINETUNE)),
    ]:
        model = copy.deepcopy(base)
        run_recipe(model, recipe)
        rows.append(measured(model, name, technique, "cnn", tmp, "cnn"))
    rows.append(torch_pruning_row(base, tmp))
    return [r for r in rows if r is not None]


def torch_pruning_row(base, tmp):
    """Torch-Pruning's MagnitudePruner (L1, DepGraph) at the same 50% channel ratio and the same fine-tune."""
    try:
        import torch_pruning as tp
    except ImportError:
        print("Torch-Pruning not installed here: run with /tmp/peers/venv/bin/python for its row")
        return None
    model = copy.deepcopy(base).eval()
    example = get_task("digits").calibration(1)[0]
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[model.head])
    pruner.step()
    batches = get_task("digits").training_batches(model, 64, FINETUNE.seed)
    train(model, batches, FINETUNE, callbacks=[KeepMasks()])
    # Torch-Pruning leaves plain nn.Conv2d layers whose shapes no config records; measure it in memory
    TIMED["cnn"]["cnn-channels50-torch-pruning"] = get_task("digits").example_call(model.eval(), 64)
    return evaluate(model, name="cnn-channels50-torch-pruning", technique="50% channels, Torch-Pruning L1 + 300 steps",
                    baseline="cnn", threads=THREADS)


def gpt_rows(tmp) -> list:
    base = zoo.reference("gpt")
    rows = [measured(base, "gpt", "baseline", None, tmp)]
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(base)
        config = PruneConfig(sparsity=0.5, method=method)
        start = time.perf_counter()
        prune(model, config, task_calibration(model, config))
        seconds = time.perf_counter() - start
        rows.append(measured(model, f"gpt-50-{method}", f"50% {method}, one-shot ({seconds:.1f} s)", "gpt", tmp))
    model = copy.deepcopy(base)
    config = PruneConfig(nm=(2, 4), method="wanda")
    prune(model, config, task_calibration(model, config))
    rows.append(measured(model, "gpt-2:4-wanda", "2:4 wanda, one-shot", "gpt", tmp))
    return rows


def minilm_rows(tmp) -> list:
    from slimkit.data import minilm

    base = minilm().model.eval()
    rows = [measured(base, "minilm", "baseline", None, tmp, "minilm")]
    model = copy.deepcopy(base)
    report = prune(model, PruneConfig(structured=True, ratio=0.25))
    heads = sum(r.after for r in report.layers if r.unit == "heads")
    rows.append(measured(model, "minilm-heads-ffn-25", f"25% of heads and FFN removed ({heads}/72 heads left)",
                         "minilm", tmp, "minilm"))
    return rows


def main() -> None:
    print(machine_line(THREADS) + "\n")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for title, rows in (("Digits CNN", cnn_rows), ("GPT (pycorpus), 50% of each layer", gpt_rows),
                            ("MiniLM", minilm_rows)):
            print(f"### {title}\n\n{markdown_table(rows(tmp))}\n", flush=True)
            section = rows.__name__.removesuffix("_rows")
            if section in TIMED:
                print(latency_table(TIMED[section], rounds=10 if section == "minilm" else 30) + "\n", flush=True)
    print(f"(benchmark took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
