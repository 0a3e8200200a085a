"""Recipes: an ordered list of technique steps read from YAML, each checked with the line of any mistake.

A recipe file::

    name: sparse-then-int8
    steps:
      - prune: {sparsity: 0.9, scope: global}
      - finetune: {steps: 100, lr: 1e-3}
        batch_size: 64
      - quantize_activations: {mode: static, weight_bits: 8}
        overrides:
          "stem.*": skip              # leave these layers alone
          "blocks.3.*": {weight_bits: 4}

>>> recipe = load_recipe("edge-int8")  # doctest: +SKIP
>>> [step.name for step in recipe.steps]  # doctest: +SKIP
['int8']
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from slimkit import registry
from slimkit.configs import accepted_keys, canonical, field_names, plain
from slimkit.errors import UserInputError
from slimkit.recipes.yaml_errors import RecipeError, error_at, load_yaml
from slimkit.training import TrainConfig

STEP_KEYS = ("name", "overrides", "batch_size", "train", "student")
BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class Step:
    """One step: a technique and its config, with per-layer overrides where the technique selects by pattern.

    overrides: (fnmatch pattern, {field: value} applied to the matching layers, or None: leave them alone).
    train: the training of a distill step or a QAT step (default: TrainConfig()).
    batch_size: training batch size of finetune, distill and QAT steps.
    student: distill: a models spec ("cnn:widths=16-32") or a float, the teacher's widths scaled by it.
    """

    technique: str
    config: object
    name: str
    overrides: tuple[tuple[str, dict | None], ...] = ()
    train: TrainConfig | None = None
    batch_size: int = 64
    student: str | float | None = None

    def configs(self) -> list:
        """The configs to apply in order: the base (override patterns excluded), then one per override."""
        if not self.overrides:
            return [self.config]
        patterns = tuple(p for p, _ in self.overrides)
        runs = [dataclasses.replace(self.config, exclude=self.config.exclude + patterns)]
        return runs + [dataclasses.replace(self.config, include=(p,), **changes)
                       for p, changes in self.overrides if changes is not None]

    def to_dict(self) -> dict:
        data: dict = {"name": self.name, self.technique: changed_fields(self.config)}
        if self.overrides:
            data["overrides"] = {p: ("skip" if c is None else plain(c)) for p, c in self.overrides}
        if self.train is not None:
            data["train"] = changed_fields(self.train)
        if self.technique in ("finetune", "distill") or self.train is not None:
            data["batch_size"] = self.batch_size
        if self.student is not None:
            data["student"] = self.student
        return data


@dataclass(frozen=True)
class Recipe:
    """Steps applied in order to a model. ``task`` fixes the evaluation task (None: inferred from the model)."""

    steps: tuple[Step, ...]
    name: str = "recipe"
    description: str = ""
    task: str | None = None

    def to_dict(self) -> dict:
        data = {"name": self.name, "description": self.description, "task": self.task,
                "steps": [s.to_dict() for s in self.steps]}
        return {k: v for k, v in data.items() if v not in (None, "")}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def load_recipe(source: str | Path) -> Recipe:
    """A recipe from a YAML file, or a built-in one by name (see ``builtin_recipes``)."""
    path = Path(source)
    if not path.is_file():
        builtin = BUILTIN_DIR / f"{source}.yaml"
        if not builtin.is_file():
            raise UserInputError(f"recipe {str(source)!r} is neither a file nor a built-in recipe; built-in: "
                                 f"{', '.join(builtin_recipes())} (slimkit compress --list)")
        path = builtin
    return parse_recipe(path.read_text(), str(source))


def builtin_recipes() -> dict[str, str]:
    """{name: description} of the recipes shipped with slimkit."""
    return {p.stem: parse_recipe(p.read_text(), p.name).description for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def parse_recipe(text: str, source: str = "recipe") -> Recipe:
    """Check and build a Recipe from YAML text; any mistake is a RecipeError naming the line and the field."""
    data, lines = load_yaml(text, source)
    if not isinstance(data, dict):
        raise error_at(source, lines, (), "a recipe is a mapping with a 'steps:' list")
    unknown = sorted(set(data) - {"name", "description", "task", "steps"})
    if unknown:
        raise error_at(source, lines, (unknown[0],), "unknown recipe key; known: name, description, task, steps")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise error_at(source, lines, ("steps",), "needs a non-empty list of steps")
    task = data.get("task")
    if task is not None:
        from slimkit.models.tasks import TASKS

        if task not in TASKS:
            raise error_at(source, lines, ("task",), f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    parsed = tuple(_parse_step(step, ("steps", i), source, lines) for i, step in enumerate(steps))
    names = [s.name for s in parsed]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise error_at(source, lines, ("steps", i, "name"), f"step name {name!r} is used twice; names must differ")
    return Recipe(parsed, str(data.get("name", Path(source).stem)), str(data.get("description", "")), task)


def _parse_step(raw, path: tuple, source: str, lines: dict) -> Step:
    if not isinstance(raw, dict):
        raise error_at(source, lines, path, f"a step is a mapping like '- prune: {{sparsity: 0.9}}', not {raw!r}")
    techniques = registry.techniques(recipe=True)
    kinds = [k for k in raw if k in techniques]
    others = [k for k in raw if k not in techniques and k not in STEP_KEYS]
    if others:
        raise error_at(source, lines, path + (others[0],), f"unknown step key; techniques: {', '.join(techniques)}; "
                       f"step settings: {', '.join(STEP_KEYS)}")
    if len(kinds) != 1:
        raise error_at(source, lines, path, f"a step names exactly one technique of {', '.join(techniques)} "
                       f"(found {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    technique = techniques[kind]
    config = build_checked(technique.config, raw[kind] or {}, path + (kind,), source, lines)
    train = raw.get("train")
    if train is not None:
        # a step whose config is itself a TrainConfig (finetune) trains by it; others take train: if they train
        if not technique.needs_training(config) or technique.config is TrainConfig:
            raise error_at(source, lines, path + ("train",), "only distill and QAT steps train; use a finetune step")
        train = build_checked(TrainConfig, train, path + ("train",), source, lines)
    batch_size = raw.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise error_at(source, lines, path + ("batch_size",), f"{batch_size!r} is not a positive whole number")
    student = raw.get("student")
    if (student is None) != (kind != "distill"):
        raise error_at(source, lines, path + ("student",) if student is not None else path,
                       "distill steps need student: (a spec like 'cnn:widths=16-32' or a width factor like 0.5); "
                       "other steps take none")
    if isinstance(student, (int, float)) and not 0 < student < 1:
        raise error_at(source, lines, path + ("student",), f"width factor {student} must lie in (0, 1)")
    overrides = _parse_overrides(raw.get("overrides"), kind, config, path + ("overrides",), source, lines)
    name = str(raw.get("name", kind))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise error_at(source, lines, path + ("name",), f"{name!r}: use letters, digits, '.', '_' and '-' only")
    return Step(kind, config, name, overrides, train, batch_size, student)


def _parse_overrides(raw, kind: str, config, path: tuple, source: str, lines: dict) -> tuple:
    if raw is None:
        return ()
    patterned = [n for n, t in registry.techniques(recipe=True).items() if t.patterned]
    if kind not in patterned:
        raise error_at(source, lines, path, f"{kind} steps apply to the whole model; overrides work for "
                       f"{', '.join(patterned)}")
    if not isinstance(raw, dict) or not raw:
        raise error_at(source, lines, path, "give a mapping of layer pattern -> settings (or 'skip')")
    result = []
    for pattern, changes in raw.items():
        if changes == "skip":
            result.append((str(pattern), None))
            continue
        if not isinstance(changes, dict):
            raise error_at(source, lines, path + (pattern,), f"give settings like {{format: int8}} or 'skip', "
                           f"not {changes!r}")
        for key in ("include", "exclude"):
            if key in changes:
                raise error_at(source, lines, path + (pattern, key), "the pattern itself selects the layers here")
        build_checked(type(config), {**config.to_dict(), **canonical(type(config), changes)}, path + (pattern,),
                      source, lines, given=changes)
        result.append((str(pattern), dict(changes)))
    return tuple(result)


def build_checked(cls, data, path: tuple, source: str, lines: dict, given: dict | None = None):
    """``cls(**data)``; an unknown field or a bad value is a RecipeError at that field's line."""
    if not isinstance(data, dict):
        raise error_at(source, lines, path, f"expected a mapping of {cls.__name__} settings, got {data!r}")
    fields = field_names(cls)
    for key in data:
        if key not in accepted_keys(cls):  # old names (calib_samples, group_size) still read
            raise error_at(source, lines, path + (key,), f"unknown {cls.__name__} setting; known: {', '.join(fields)}")
    try:
        return cls(**canonical(cls, data))
    except (UserInputError, TypeError, ValueError) as exc:
        named = [k for k in (given if given is not None else data) if re.search(rf"\b{re.escape(k)}\b", str(exc))]
        field = named[0] if named else None
        if field is None and len(given or data) == 1:
            field = next(iter(given or data))  # the only field given must be the wrong one
        raise error_at(source, lines, path + ((field,) if field else ()), str(exc)) from None


def changed_fields(config) -> dict:
    """The fields of a config dataclass that differ from their defaults, as plain YAML values."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    data = plain(config.to_dict())
    return {k: v for k, v in data.items()
            if k not in defaults or not (v == plain(defaults[k]) or (v in ({}, []) and defaults[k] in ((), None)))}


__all__ = ["Recipe", "RecipeError", "Step", "builtin_recipes", "load_recipe", "parse_recipe"]
