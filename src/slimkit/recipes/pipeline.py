"""Run a recipe: each step applied in order, each finished step saved so that a re-run resumes after it.

Layout of ``out``: ``steps/NN-name/`` (the artifact after step NN), ``model/`` (the final artifact),
``recipe.yaml`` (what ran), ``report.json`` and ``report.md``. A step is skipped on a re-run when its
folder holds the artifact of the same recipe up to and including that step on the same input.

>>> result = run_pipeline(reference("cnn"), load_recipe("edge-int8"), "out/cnn-edge")  # doctest: +SKIP
>>> result.after.artifact_bytes < result.before.artifact_bytes  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from slimkit.atomic import check_replaceable, write_file
from slimkit.errors import SlimkitError
from slimkit.io import OWNED_FILES
from slimkit.recipes.recipe import Recipe, Step
from slimkit.recipes.steps import apply_step

STEPS_DIR, MODEL_DIR = "steps", "model"
ARTIFACT_FILES = OWNED_FILES  # a step folder holds what slimkit.save wrote (a transformers model's companions too)


class StepFailed(SlimkitError):
    """A recipe step raised; the steps before it are saved and the run can resume from them."""


@dataclass
class PipelineResult:
    """The compressed model, the before/after records, and one row per step (quality, bytes, seconds)."""

    model: nn.Module
    steps: list[dict] = field(default_factory=list)
    before: object = None  # EvalRecord
    after: object = None  # EvalRecord

    def to_dict(self) -> dict:
        return {"steps": self.steps, "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None}


def run_pipeline(model: nn.Module, recipe: Recipe, out: str | Path | None = None, *, task: str | None = None,
                 calib: str | None = None, source: str = "", measure: bool = True, measure_paths: bool = True,
                 threads: int = 2) -> PipelineResult:
    """Apply ``recipe`` to ``model`` (changed in place unless a distill step replaces it); return the result.

    ``out``: folder for the step artifacts, the final artifact and the report (None: keep nothing, as the
    search does). ``task``: evaluation/training task (default: the recipe's, else inferred);
    ``calib``: task whose training split calibrates (default: ``task``). ``source`` names the input
    model in the resume key. ``measure``: evaluate before and after (quality, bytes, latency, memory)
    and the quality after each step;
    ``measure_paths``: time the execution paths of weight-quantized layers (see ``apply_step``).
    """
    from slimkit.models.tasks import evaluate
    from slimkit.models.tasks import get_task, infer_task
    from slimkit.progress import progress

    task = task or recipe.task or infer_task(model)
    result = PipelineResult(model)
    if measure:
        result.before = evaluate(model, task, name="before", threads=threads)
    digest = hashlib.sha256(source.encode()).hexdigest()
    out = Path(out) if out is not None else None
    with progress(recipe.steps, desc=recipe.name, unit="step") as bar:
        for index, step in enumerate(bar):
            bar.set_postfix_str(step.name)
            digest = hashlib.sha256(json.dumps([digest, step.to_dict(), task, calib]).encode()).hexdigest()
            folder = out / STEPS_DIR / f"{index + 1:02d}-{step.name}" if out is not None else None
            resumed = _resume(folder, digest)
            start = time.perf_counter()
            if resumed is not None:
                model = resumed
            else:
                model = _run_step(model, step, index, task, calib or task, out, result, measure_paths)
            row = {"step": index + 1, "name": step.name, "technique": step.technique, "resumed": resumed is not None,
                   "seconds": round(time.perf_counter() - start, 2)}
            if measure:
                metric = get_task(task).metric
                row[metric] = get_task(task).quality(model)[metric]
            if folder is not None and resumed is None:
                _save_step(model, folder, digest, step)
            if folder is not None:
                from slimkit.io import artifact_bytes

                row["artifact_bytes"] = artifact_bytes(folder)
            result.steps.append(row)
    result.model = model
    if out is not None:
        _finish(result, recipe, out, task, measure, threads)
    return result


def _run_step(model: nn.Module, step: Step, index: int, task: str, calib: str, out: Path | None,
              result: PipelineResult, measure_paths: bool) -> nn.Module:
    try:
        return apply_step(model, step, task, calib, measure_paths=measure_paths)
    except Exception as exc:  # any failure: keep what finished, say which step and why
        reason = f"{type(exc).__name__}: {exc}"
        where = ""
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_file(out / "report.json", (json.dumps(
                {"status": "failed", "failed_step": index + 1, "step": step.name, "reason": reason,
                 "steps": result.steps}, indent=2) + "\n").encode())
            where = (f"; steps 1-{index} are saved under {out / STEPS_DIR} and a re-run resumes after them"
                     if index else f"; nothing was changed (report in {out / 'report.json'})")
        raise StepFailed(f"step {index + 1} ({step.name}, {step.technique}) failed: {reason}{where}") from exc


def _resume(folder: Path | None, digest: str) -> nn.Module | None:
    """The saved artifact of this step if it was made by the same recipe prefix, else None (folder cleared)."""
    from slimkit.io import load, read_meta

    if folder is None or not folder.exists():
        return None
    try:
        if read_meta(folder)["metrics"].get("recipe_digest") == digest:
            return load(folder)
    except SlimkitError:
        pass  # interrupted while saving, or a different recipe: redo the step
    for later in sorted(folder.parent.iterdir()):
        if later.name >= folder.name:  # what came after a changed step is stale too
            check_replaceable(later, ARTIFACT_FILES)  # a folder holding anything else is not ours to delete
            shutil.rmtree(later)
    return None


def _save_step(model: nn.Module, folder: Path, digest: str, step: Step) -> None:
    from slimkit.io import save

    # save swaps a complete folder into place: a kill never leaves half a step; pruning masks are kept
    save(model, folder, metrics={"recipe_digest": digest, "recipe_step": step.to_dict()})


def _finish(result: PipelineResult, recipe: Recipe, out: Path, task: str, measure: bool, threads: int) -> None:
    from slimkit.models.tasks import evaluate
    from slimkit.io import save

    final = out / MODEL_DIR
    save(result.model, final, metrics={"recipe": recipe.to_dict()})
    write_file(out / "recipe.yaml", recipe.to_yaml().encode())
    if measure:
        result.after = evaluate(result.model, task, name=f"after {recipe.name}", technique=f"recipe {recipe.name}",
                                baseline="before", artifact_dir=final, threads=threads)
    write_file(out / "report.json", (json.dumps({"status": "done", **result.to_dict()}, indent=2) + "\n").encode())
    write_file(out / "report.md", report_markdown(result, recipe).encode())


def report_markdown(result: PipelineResult, recipe: Recipe) -> str:
    """The before/after table and one row per step."""
    from slimkit.evaluation.report import markdown_table

    lines = [f"# recipe {recipe.name}", "", recipe.description, ""]
    if result.before is not None and result.after is not None:
        lines += [markdown_table([result.before, result.after]), ""]
    metric = next((k for k in result.steps[0] if k not in _STEP_COLUMNS), "quality") if result.steps else "quality"
    lines += [f"| step | technique | {metric} | artifact bytes | seconds | resumed |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in result.steps:
        value = f"{r[metric]:.4f}" if metric in r else "—"
        lines.append(f"| {r['step']}. {r['name']} | {r['technique']} | {value} | "
                     f"{r.get('artifact_bytes', 0):,} | {r['seconds']} | {'yes' if r['resumed'] else ''} |")
    return "\n".join(lines) + "\n"


_STEP_COLUMNS = ("step", "name", "technique", "resumed", "seconds", "artifact_bytes")
