"""Capture intermediate outputs of named modules with forward hooks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from slimkit.errors import UserInputError
from slimkit.naming import closest_names


class FeatureCapture:
    """While active, ``captured[name]`` holds the latest output of each named module.

    >>> with FeatureCapture(model, ["blocks.1"]) as capture:  # doctest: +SKIP
    ...     model(x)
    ...     hidden = capture.captured["blocks.1"]  # (B, T, C)
    """

    def __init__(self, model: nn.Module, names: Sequence[str], role: str = "model") -> None:
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                close = closest_names(name, [n for n in modules if n])
                raise UserInputError(f"{role} has no module named {name!r}; closest names: {', '.join(close) or 'none'}")
        self.modules = {name: modules[name] for name in names}
        self.captured: dict[str, Tensor] = {}
        self._handles = []

    def __enter__(self) -> FeatureCapture:
        self.captured = {}  # reusable: each use starts empty
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            # HF layers return tuples (hidden_states, ...): the hidden states are what is distilled
            self.captured[name] = output[0] if isinstance(output, tuple) else getattr(output, "last_hidden_state",
                                                                                          output)
        return hook
