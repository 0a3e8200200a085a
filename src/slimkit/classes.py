"""The classes an artifact may name: the allow-list that ``slimkit.load`` resolves class names through.

An artifact is untrusted input, so a class name read from slimkit.json is never imported or looked
up as an attribute. It resolves to one of:

- slimkit's own classes that rebuild themselves (QuantLinear, LoRALinear, LowRankLinear, Int8Linear,
  ..., and the reference models with their configs), by a short stable name (``"QuantLinear"``);
- transformers model and config classes whose names transformers' auto registry lists;
- classes the user registered with ``register_class`` (optionally with a factory that builds them).

Artifacts of format 2 recorded ``"package.module:Qualname"``; such a name is accepted only when it
is the import path of an allow-listed class.

>>> register_class(MyNet, name="my-net")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from slimkit.description import check_spec
from slimkit.errors import ArtifactError, SlimkitError, UserInputError

# Fixed import paths of slimkit's own classes; artifact text only ever selects a key of this table.
_BUILTIN = {
    "QuantLinear": "slimkit.quantization.modules",
    "QuantEmbedding": "slimkit.quantization.embedding",
    "GGMLLinear": "slimkit.quantization.ggml_layers",
    "GGMLEmbedding": "slimkit.quantization.ggml_layers",
    "Int8Linear": "slimkit.quantization.activation.modules",
    "Int8Conv2d": "slimkit.quantization.activation.modules",
    "Folded": "slimkit.quantization.activation.fuse",
    "FusedLinear": "slimkit.quantization.activation.fuse",
    "FusedConv2d": "slimkit.quantization.activation.fuse",
    "LoRALinear": "slimkit.adapters.layer",
    "LowRankLinear": "slimkit.lowrank.svd",
    "LowRankConv2d": "slimkit.lowrank.conv",
    "PrunedLinear": "slimkit.pruning.modules",
    "PrunedConv2d": "slimkit.pruning.modules",
    "PrunedBatchNorm2d": "slimkit.pruning.modules",
    "PrunedSelfAttention": "slimkit.pruning.modules",
    "DPGroupNorm": "slimkit.privacy.layers",
    "Conv1DLinear": "slimkit.selection",
    "MLP": "slimkit.models.mlp",
    "MLPConfig": "slimkit.models.mlp",
    "ResNet": "slimkit.models.resnet",
    "ResNetConfig": "slimkit.models.resnet",
    "GPT": "slimkit.models.gpt",
    "GPTConfig": "slimkit.models.gpt",
}


@dataclass(frozen=True)
class Registered:
    """A user class an artifact may name, and what builds it from the recorded arguments."""

    cls: type
    factory: Callable | None = None


_USER: dict[str, Registered] = {}


def register_class(cls: type, *, name: str | None = None, factory: Callable | None = None) -> type:
    """Allow artifacts to name ``cls`` (saved under ``name``, default ``"module.Qualname"``); returns ``cls``.

    ``factory(**init_args)`` builds the model on load when its constructor cannot (e.g. torchvision's
    ``resnet18`` for ``ResNet``); it must return an instance of ``cls``. Usable as a decorator.
    """
    if not isinstance(cls, type):
        raise UserInputError(f"register_class takes a class, got {cls!r}")
    name = name or f"{cls.__module__}.{cls.__qualname__}"
    if name in _BUILTIN or _is_transformers_name(name):
        raise UserInputError(f"{name!r} is a name slimkit already resolves; register {cls.__qualname__} "
                             "under another name")
    known = _USER.get(name)
    if known is not None and known.cls is not cls:
        raise UserInputError(f"{name!r} is already registered for {known.cls.__module__}.{known.cls.__qualname__}")
    _USER[name] = Registered(cls, factory)
    return cls


def class_name(cls: type) -> str:
    """The name an artifact records for ``cls``; UserInputError when loading could not resolve it."""
    for name, entry in _USER.items():
        if entry.cls is cls:
            return name
    if _BUILTIN.get(cls.__name__) == cls.__module__:
        return cls.__name__
    if _is_transformers_class(cls):
        return cls.__name__
    raise UserInputError(
        f"cannot record how to rebuild {cls.__qualname__} ({cls.__module__}): slimkit.load rebuilds only "
        f"allow-listed classes; call slimkit.register_class({cls.__qualname__}) in the saving and the loading program")


def resolve(name: object, field: str) -> Registered:
    """The allow-listed class ``name`` (read from the artifact's ``field``); ArtifactError otherwise."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ArtifactError(f"{field}: expected a class name, got {_short(name)}")
    if name in _USER:
        return _USER[name]
    if name in _BUILTIN:
        return Registered(getattr(importlib.import_module(_BUILTIN[name]), name))
    if ":" in name:  # format 2 recorded the import path; accepted only for an allow-listed class
        module, _, qualname = name.partition(":")
        if _BUILTIN.get(qualname) == module:
            return Registered(getattr(importlib.import_module(module), qualname))
        for entry in _USER.values():
            if (entry.cls.__module__, entry.cls.__qualname__) == (module, qualname):
                return entry
    elif _is_transformers_name(name):
        import transformers

        return Registered(getattr(transformers, name))
    raise ArtifactError(f"{field}: class {_short(name)} is not on slimkit's allow-list (slimkit's own classes, "
                        "transformers models, classes registered with slimkit.register_class); if you trust "
                        "this artifact, register the class it needs and load again")


def construct(make, where: str):
    """``make()``; ArtifactError naming ``where`` when an allow-listed constructor refuses what a file recorded."""
    try:
        return make()
    except SlimkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - an allow-listed constructor refused the recorded arguments
        raise ArtifactError(f"{where}: cannot be built from the recorded arguments ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from None


def spec_record(module: nn.Module) -> dict:
    """``{"class": allow-listed name, "spec": module.slimkit_spec()}``, how a swapped-in module is recorded."""
    return {"class": class_name(type(module)), "spec": module.slimkit_spec()}


def from_spec_record(record: object, where: str) -> nn.Module:
    """The empty module a ``spec_record`` describes, built by its allow-listed class's ``from_slimkit_spec``."""
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise ArtifactError(f"{where}: needs a class and a spec object")
    cls = resolve(record.get("class"), f"{where}.class").cls
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "from_slimkit_spec")):
        raise ArtifactError(f"{where}.class: {cls.__name__} does not rebuild from a spec")
    check_spec(record["spec"], f"{where}.spec")
    module = construct(lambda: cls.from_slimkit_spec(record["spec"]), f"{where} ({cls.__name__})")
    if not isinstance(module, nn.Module):
        raise ArtifactError(f"{where}: {cls.__name__}.from_slimkit_spec did not return a module")
    return module


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _transformers_names() -> frozenset[str]:
    """Model and config class names in transformers' auto registry (empty without transformers)."""
    global _TRANSFORMERS
    if _TRANSFORMERS is None:
        try:
            from transformers.models.auto import configuration_auto, modeling_auto
        except ImportError:
            _TRANSFORMERS = frozenset()
            return _TRANSFORMERS
        names = set(configuration_auto.CONFIG_MAPPING_NAMES.values())
        for attr, mapping in vars(modeling_auto).items():
            if attr.endswith("_MAPPING_NAMES") and isinstance(mapping, dict):
                for value in mapping.values():
                    names.update(value if isinstance(value, (tuple, list)) else [value])
        _TRANSFORMERS = frozenset(n for n in names if isinstance(n, str))
    return _TRANSFORMERS


_TRANSFORMERS: frozenset[str] | None = None


def _is_transformers_name(name: str) -> bool:
    return name in _transformers_names()


def _is_transformers_class(cls: type) -> bool:
    return cls.__module__.startswith("transformers.") and _is_transformers_name(cls.__name__)


def is_transformers_model(model: object) -> bool:
    """Whether ``model`` is a transformers PreTrainedModel (False without transformers installed)."""
    return is_transformers_model_class(type(model))


def is_transformers_model_class(cls: type) -> bool:
    if "transformers" not in sys.modules:
        return False  # a transformers model's module imported it
    from transformers import PreTrainedModel

    return isinstance(cls, type) and issubclass(cls, PreTrainedModel)
