"""Progress bars: shown on a terminal, silent when output is piped or ``quiet`` is set."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar in this process (the CLI's ``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr, disabled when stderr is not a terminal or quiet mode is on."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False,
                disable=_QUIET or not sys.stderr.isatty(), dynamic_ncols=True)
