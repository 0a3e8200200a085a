"""Progress: tqdm bars on a terminal, status lines with elapsed time when piped or logged, nothing with ``quiet``."""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar in this process (the CLI's ``--quiet``), transformers' loading bars included."""
    global _QUIET
    _QUIET = quiet
    if quiet or not sys.stderr.isatty():
        # transformers reads this (through huggingface_hub) when it is imported; if it already was, tell it
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        elif "huggingface_hub" in sys.modules:  # it read the variable already; transformers will ask it
            sys.modules["huggingface_hub"].utils.disable_progress_bars()


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr when it is a terminal; without one, status lines with the elapsed time
    (``StatusLines``: a piped or logged run is not silent); nothing in quiet mode."""
    if not _QUIET and not sys.stderr.isatty():
        return StatusLines(iterable, total=total, desc=desc, unit=unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=_QUIET, dynamic_ncols=True)


class StatusLines:
    """tqdm's interface as plain lines on stderr: one when a stage starts, one per named item
    (``set_postfix_str``, e.g. the demo's rows), at most one every ``EVERY_S`` seconds otherwise, one at the end.

    >>> for layer in StatusLines(range(3), desc="quantizing", unit="layer"): pass  # doctest: +SKIP
    slimkit: quantizing: 3 layers
    slimkit: quantizing done: 3 layers in 0.0 s
    """

    EVERY_S = 10.0

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it") -> None:
        self.iterable, self.desc, self.unit, self.n = iterable, desc, unit, 0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.start = self.last = time.monotonic()
        self.postfix, self.closed = "", False
        self._line(f"{self.total} {unit}s" if self.total is not None else "started")

    def _line(self, text: str) -> None:
        sys.stderr.write(f"slimkit: {self.desc}: {text}\n" if self.desc else f"slimkit: {text}\n")
        sys.stderr.flush()
        self.last = time.monotonic()

    def _position(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.n}{of} {self.unit}s, {time.monotonic() - self.start:.1f} s"

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.EVERY_S:
            self._line(self._position() + (f" ({self.postfix})" if self.postfix else ""))

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._line(f"{text} ({self._position()})")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(f"done: {self.n} {self.unit}s in {time.monotonic() - self.start:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
