"""Accuracy-budget search with Optuna: the smallest (or fastest) model within a quality budget.

slimkit contributes the space (space.py: per-layer float / removed channels / sparsity / low rank /
bit width), the per-layer sensitivity that prunes it and guides it (greedy.py: for the bytes
objective, a bisection along the configurations ordered by measured drop per byte saved runs before
TPE), and cheap proxies; Optuna searches (TPE with the budget as a constraint, or NSGA-II over
objective and quality drop with ``pareto=True``) and keeps every trial in
``OUT/search.db`` (SQLite), so an interrupted search resumes and ``optuna-dashboard
sqlite:///OUT/search.db`` shows it. The best candidates within budget are then built for real with
the recipe pipeline and evaluated on the task's own evaluation data; the first that stays within the
budget is kept (``OUT/model``, ``OUT/recipe.yaml``, ``OUT/report.md``, ``OUT/pareto.png``).

>>> result = search(reference("cnn"), SearchConfig(max_drop=0.01), "out/cnn-auto")  # doctest: +SKIP
>>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from slimkit.errors import MissingDependencyError, SlimkitError, UserInputError
from slimkit.recipes.greedy import bisect_chain, greedy_chain
from slimkit.recipes.space import (BITS, CALIB, OPTIONS, apply_proxy, choice_recipe, layer_space, proxy_quality,
                                   sensitivity)
from slimkit.selection import as_patterns
from slimkit.timing import latency_ms

OBJECTIVES = ("bytes", "latency")
CANDIDATES = 3  # feasible trials built for real, best first, until one meets the budget on the evaluation data


class BudgetNotMet(SlimkitError):
    """No configuration met the quality budget; the closest one was saved."""


@dataclass(frozen=True)
class SearchConfig:
    """How the search runs.

    >>> SearchConfig(max_drop=0.01, relative=True, objective="bytes", trials=30)  # doctest: +SKIP
    """

    max_drop: float
    """Largest quality loss allowed: a fraction of the baseline's metric (relative) or in the metric's units."""
    relative: bool = True
    """max_drop is relative to the baseline's metric (1% of 0.99 accuracy = 0.0099)."""
    objective: str = "bytes"
    """"bytes" (artifact size, estimated per trial) or "latency" (each trial built for real and timed)."""
    trials: int = 20
    """Optuna trials in total (a resumed search runs only the missing ones)."""
    pareto: bool = False
    """NSGA-II over (objective, quality drop) instead of TPE on the objective with the budget as a constraint."""
    seed: int = 0
    """Seed of the sampler."""
    options: tuple[str, ...] = OPTIONS
    """Per-layer options besides float: channels25/50 (structured pruning, L1), sparse50/75/90 (magnitude
    pruning), lowrank50/25 (factors keeping that fraction of the weights), int8/int4/int3/int2 weights."""
    method: str = "rtn"
    """Weight-only rounding of models without convolutions: "rtn", or "gptq" (run for real in every trial:
    slower, and what makes int4 fit a tight budget)."""
    include: tuple[str, ...] = ()
    """fnmatch patterns of the layers searched (empty: every Linear/Conv2d of 1,024+ weights)."""

    def __post_init__(self) -> None:
        if not self.max_drop >= 0:
            raise UserInputError(f"max_drop={self.max_drop}: a quality drop cannot be negative")
        if self.objective not in OBJECTIVES:
            raise UserInputError(f"objective={self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.trials < 1:
            raise UserInputError(f"trials={self.trials}: run at least one trial")
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "include", as_patterns(self.include))
        if self.method not in ("rtn", "gptq"):
            raise UserInputError(f"method={self.method!r}: choose rtn or gptq")
        unknown = [o for o in self.options if o not in OPTIONS]
        if unknown or not self.options:
            raise UserInputError(f"options={list(self.options)}: choose among {', '.join(OPTIONS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SearchResult:
    """The chosen recipe and its measured records, the frontier, and what the search cost."""

    recipe: object
    before: object
    after: object
    met: bool
    trials: int
    seconds: float
    trial: int = -1  # the chosen trial's number in the study
    frontier: list[dict] = field(default_factory=list)
    drops: dict = field(default_factory=dict)
    out: str = ""

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "before": self.before.to_dict(), "after": self.after.to_dict(),
                "met": self.met, "trials": self.trials, "trial": self.trial, "seconds": round(self.seconds, 1),
                "frontier": self.frontier, "sensitivity": self.drops, "out": self.out}

    def summary(self) -> str:
        from slimkit.evaluation.report import markdown_table

        return (f"{markdown_table([self.before, self.after])}\n\nsearched {self.trials} trial(s) in "
                f"{self.seconds:.0f} s; {len(self.frontier)} on the frontier ({self.out}/pareto.png); "
                f"recipe {self.out}/recipe.yaml; model {self.out}/model")


def search(model: nn.Module, config: SearchConfig, out: str | Path, *, task: str | None = None,
           calib: str | None = None, source: str = "", threads: int = 2) -> SearchResult:
    """Search for the configuration of ``model`` that minimises ``config.objective`` within the budget."""
    optuna = _optuna()
    from slimkit.models.tasks import get_task, infer_task

    start = time.perf_counter()
    task = task or infer_task(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    measure = proxy_quality(task, model)
    base_quality = measure(model)[0]
    sign = 1 if get_task(task).higher_is_better else -1
    budget = _budget(config, base_quality)
    calib_batches = get_task(calib or task).calibration(CALIB) if config.method == "gptq" else ()
    space, found = sensitivity(model, layer_space(model, config.options, config.method, calib_batches,
                                                  config.include, task), measure, budget)
    drops = found["drop"]
    if all(len(options) == 1 for options in space.layers.values()):
        layer, option, drop = min(((n, o, d) for n, ds in drops.items() for o, d in ds.items()), key=lambda x: x[2])
        raise BudgetNotMet(f"no layer can be compressed within a drop of {_budget_text(config)}: the mildest "
                           f"change, {option} on {layer} alone, already loses {drop:.4g} (budget {budget:.4g}); "
                           "the model is left as it is; allow a larger --max-drop")
    study = _study(optuna, config, out, space)
    evaluate_trial = _trial_function(model, space, measure, base_quality, config, task, calib, threads)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    _optimize(study, evaluate_trial, config, len(waiting))  # the starting points first
    if config.objective == "bytes":
        bisect_chain(greedy_chain(space.layers, found), budget,
                     lambda choice: _measure(study, evaluate_trial, config, space, choice), config.trials)
    _optimize(study, evaluate_trial, config, config.trials)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    frontier = pareto_front(trials)
    result = _build_best(model, trials, space, budget, config, out, task, calib, source, threads, sign)
    result.frontier, result.drops, result.out = frontier, drops, str(out)
    result.trials, result.seconds = len(trials), time.perf_counter() - start
    plot_frontier(trials, frontier, budget, config.objective, out / "pareto.png", result)
    (out / "search.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.met:
        raise BudgetNotMet(
            f"no configuration in {result.trials} trial(s) lost at most {_budget_text(config)}; the closest "
            f"({result.after.metric} {result.after.value:.4f} vs {result.before.value:.4f}, "
            f"{result.after.artifact_bytes:,} bytes) is saved in {out}/model with its recipe; allow a larger "
            "--max-drop or run more --trials")
    return result


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("the search needs optuna: pip install 'slimkit[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _study(optuna, config: SearchConfig, out: Path, space):
    """The study in OUT/search.db, created or resumed; a different space or budget there is refused."""
    key = json.dumps({"config": {k: v for k, v in config.to_dict().items() if k != "trials"},
                      "space": space.layers}, sort_keys=True)
    # the budget is a constraint (trial.set_constraint), which both samplers take into account
    sampler = (optuna.samplers.NSGAIISampler(seed=config.seed) if config.pareto
               else optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=5))
    study = optuna.create_study(study_name="slimkit", storage=f"sqlite:///{out / 'search.db'}", load_if_exists=True,
                                sampler=sampler, directions=["minimize"] * (2 if config.pareto else 1))
    if study.user_attrs.get("key", key) != key:
        raise UserInputError(f"{out / 'search.db'} holds a search with other settings or another model; use a new "
                             "--out, or delete that file to start over")
    if not study.trials:
        study.set_user_attr("key", key)
        # starting points for the sampler: uniform int8 and int4 (a layer too sensitive for it takes the
        # harshest width that passed alone), and each layer's harshest option that passed alone
        starts = [{n: option if option in o else _harshest_bits(o) for n, o in space.layers.items()}
                  for option in ("int8", "int4")]
        starts.append({n: o[-1] for n, o in space.layers.items()})
        for start in starts:
            study.enqueue_trial({n: o for n, o in start.items() if len(space.layers[n]) > 1})
    return study


def _optimize(study, evaluate_trial, config: SearchConfig, count: int) -> None:
    """Run up to ``count`` more trials, never past ``config.trials`` finished ones in all."""
    left = config.trials - len([t for t in study.trials if t.state.is_finished()])
    if min(count, left) > 0:
        study.optimize(evaluate_trial, n_trials=min(count, left))


def _measure(study, evaluate_trial, config: SearchConfig, space, choice: dict[str, str]) -> float | None:
    """The proxy drop of ``choice`` from the study (a resumed search finds it there), else as a new trial;
    None when no trials are left."""
    params = {n: choice.get(n, "float") for n, options in space.layers.items() if len(options) > 1}
    done = [t for t in study.trials if t.params == params and "drop" in t.user_attrs]
    if not done:
        if len([t for t in study.trials if t.state.is_finished()]) >= config.trials:
            return None
        study.enqueue_trial(params)
        _optimize(study, evaluate_trial, config, 1)
        done = [study.trials[-1]]
    return done[0].user_attrs["drop"]


def _harshest_bits(options: tuple[str, ...]) -> str:
    return next((o for o in reversed(options) if o in BITS), "float")


def _trial_function(model, space, measure, base_quality, config, task, calib, threads):
    def objective(trial):
        choice = {n: trial.suggest_categorical(n, list(opts)) for n, opts in space.layers.items() if len(opts) > 1}
        choice = {n: o for n, o in choice.items() if o != "float"}
        if config.objective == "latency":
            value, drop = _real_trial(model, choice, space, measure, base_quality, task, calib, threads)
        else:
            candidate, value = apply_proxy(model, choice, space)
            drop = base_quality - measure(candidate)[0]
        trial.set_user_attr("drop", drop)
        trial.set_constraint("quality_drop", drop - _budget(config, base_quality))
        return (value, drop) if config.pareto else value
    return objective


def _budget(config: SearchConfig, base_quality: float) -> float:
    return config.max_drop * abs(base_quality) if config.relative else config.max_drop


def _real_trial(model, choice, space, measure, base_quality, task, calib, threads) -> tuple[float, float]:
    """(latency ms, quality drop) of the choice built with the real techniques."""
    import copy

    from slimkit.models.tasks import get_task
    from slimkit.recipes.pipeline import run_pipeline

    candidate = copy.deepcopy(model)
    if choice:
        candidate = run_pipeline(candidate, choice_recipe(choice, space), task=task, calib=calib, measure=False).model
    task_obj = get_task(task)
    return latency_ms(task_obj.example_call(candidate, task_obj.default_batch), threads=threads), \
        base_quality - measure(candidate)[0]


def pareto_front(trials) -> list[dict]:
    """Trials no other trial beats on both objective and quality drop, smallest objective first."""
    points = sorted(({"trial": t.number, "objective": t.values[0], "drop": t.user_attrs["drop"]} for t in trials),
                    key=lambda p: (p["objective"], p["drop"]))
    front, best_drop = [], float("inf")
    for p in points:
        if p["drop"] < best_drop:
            front.append(p)
            best_drop = p["drop"]
    return front


def _build_best(model, trials, space, budget, config, out, task, calib, source, threads, sign) -> SearchResult:
    """Build the best candidates for real and keep the first whose measured drop is within budget."""
    import copy

    from slimkit.recipes.pipeline import run_pipeline

    feasible = sorted((t for t in trials if t.user_attrs["drop"] <= budget), key=lambda t: t.values[0])
    closest = sorted(trials, key=lambda t: (t.user_attrs["drop"], t.values[0]))[:1]
    for trial in (feasible[:CANDIDATES] or closest):
        choice = {n: o for n, o in trial.params.items() if o != "float"}
        recipe = choice_recipe(choice, space, name=f"auto-{config.objective}",
                               description=f"found by slimkit compress --max-drop {_budget_text(config)} --objective "
                               f"{config.objective} (trial {trial.number})")
        result = run_pipeline(copy.deepcopy(model), recipe, out, task=task, calib=calib, source=source,
                              threads=threads)
        drop = sign * (result.before.value - result.after.value)
        met = drop <= (config.max_drop * abs(result.before.value) if config.relative else config.max_drop)
        if met or not feasible:
            break
    return SearchResult(recipe, result.before, result.after, met and bool(feasible), 0, 0.0, trial.number)


def _budget_text(config: SearchConfig) -> str:
    return f"{config.max_drop:.2%}" if config.relative else f"{config.max_drop}"


def plot_frontier(trials, frontier: list[dict], budget: float, objective: str, path: Path, result) -> None:
    """Every trial's (objective, quality drop), the frontier, the budget line and the chosen model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [t for t in trials if t.user_attrs["drop"] <= budget]
    bad = [t for t in trials if t.user_attrs["drop"] > budget]
    ax.scatter([t.values[0] for t in bad], [t.user_attrs["drop"] for t in bad], c="lightgray", label="over budget")
    ax.scatter([t.values[0] for t in ok], [t.user_attrs["drop"] for t in ok], c="tab:blue", label="within budget")
    ax.plot([p["objective"] for p in frontier], [p["drop"] for p in frontier], "k--", label="frontier")
    ax.axhline(budget, color="tab:red", lw=1, label="budget")
    ax.set_xlabel("estimated artifact bytes" if objective == "bytes" else "latency ms")
    ax.set_ylabel("quality drop (proxy)")
    ax.set_title(f"{len(trials)} trials; chosen: {result.after.artifact_bytes:,} bytes measured")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
