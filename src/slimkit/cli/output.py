"""``--out`` and ``--force`` for every verb that writes a folder: never destroy, never race.

``claim_out(args, *inputs)`` runs first in a verb: an ``--out`` that exists, or equals or contains an
input, is refused without ``--force`` (one line, exit 2, before anything loads); with ``--force`` the
folder is replaced atomically by the save (old or new, never half), and only if every file in it is
one slimkit writes there. The folder's lock is then held until the verb returns, so a second
process writing the same ``--out`` fails at once instead of silently replacing the first one's result.

>>> claim_out(args, args.model_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path

from slimkit.atomic import check_replaceable, locked
from slimkit.io import OWNED_FILES
from slimkit.errors import UserInputError

# files slimkit writes into an artifact folder (the saved model with a Hugging Face model's config and tokenizer,
# prune's sensitivity plot)
ARTIFACT_FILES = (*OWNED_FILES, "sensitivity.png")
_held = ExitStack()


def add_force(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists (atomically; files slimkit did not write are never deleted)")


def claim_out(args, *inputs: str | None, owned: Collection[str] = ARTIFACT_FILES, reuse: bool = False) -> None:
    """Check ``args.out`` against ``inputs`` and ``args.force``, then lock it until ``release()``.

    ``reuse``: an existing --out of slimkit's own files is accepted without --force (compress resumes in it).
    """
    if not getattr(args, "out", None) or os.environ.get("RANK", "0") != "0":
        return  # ranks other than 0 of a distributed run never write --out
    out = Path(args.out)
    _check(out, [Path(i) for i in inputs if i], getattr(args, "force", False), owned, reuse)
    if getattr(args, "nproc", 1) > 1 and "RANK" not in os.environ:
        return  # --nproc re-runs the verb on N ranks: rank 0 claims --out and writes it
    _held.enter_context(locked(out))
    _check(out, [], getattr(args, "force", False), owned, reuse)  # again: another run may have finished meanwhile


def release() -> None:
    """Give back every --out lock this process holds (the CLI calls it when a verb returns)."""
    _held.close()


def _check(out: Path, inputs: list[Path], force: bool, owned: Collection[str], reuse: bool) -> None:
    target = out.resolve()
    for source in inputs:
        source = source.resolve()
        if not force and (target == source or target in source.parents):
            raise UserInputError(f"--out {out} {'is' if target == source else 'contains'} the input {source}; "
                                 "choose another --out, or pass --force to replace it")
        if source in target.parents:
            raise UserInputError(f"--out {out} is inside the input {source}; choose a folder outside it")
    if not out.exists():
        return
    if not (force or reuse):
        raise UserInputError(f"{out} already exists; choose another --out or pass --force to replace it")
    check_replaceable(out, owned)
