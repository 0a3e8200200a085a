"""Progress bars: shown on a terminal, silent when output is piped or ``quiet`` is set."""

from __future__ import annotations

import os
import sys

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
    """A tqdm bar on stderr, disabled when stderr is not a terminal or quiet mode is on."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False,
                disable=_QUIET or not sys.stderr.isatty(), dynamic_ncols=True)
