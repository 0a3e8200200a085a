"""Writing folders so that a crash or a second writer never leaves half of one or loses the old one.

``replacing_dir(final)`` yields a temporary sibling folder; when the block finishes it is swapped into
place in one rename (Linux ``renameat2(RENAME_EXCHANGE)``, else two renames), and the old folder is
deleted only if every file in it is one slimkit writes there. ``locked(final)`` makes a second writer
to the same folder fail at once instead of overwriting the first one's result.

>>> with locked(out), replacing_dir(out, owned={"slimkit.json", "model.safetensors"}) as tmp:  # doctest: +SKIP
...     (tmp / "slimkit.json").write_text("{}")
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Collection
from contextlib import contextmanager
from pathlib import Path

from slimkit.errors import UserInputError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_held = threading.local()  # .paths: the lock files this thread holds


def foreign_files(folder: Path, owned: Collection[str]) -> list[str]:
    """Files under ``folder`` (relative paths) that match none of the ``owned`` patterns."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if not p.is_dir() and not any(fnmatch.fnmatch(str(p.relative_to(folder)), o) for o in owned))


@contextmanager
def replacing_dir(final: str | os.PathLike, *, owned: Collection[str]):
    """Yield an empty temporary folder beside ``final``; on success it becomes ``final`` atomically.

    An existing ``final`` is replaced only when every file in it matches an ``owned`` pattern (files
    slimkit writes there); otherwise UserInputError, and nothing is touched. On an exception the
    temporary folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        check_replaceable(final, owned)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        install(tmp, final, owned=owned)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def install(tmp: Path, final: Path, *, owned: Collection[str]) -> None:
    """Make the complete folder ``tmp`` become ``final`` in one step; the old ``final`` (checked to hold only
    ``owned`` files) is removed afterwards."""
    _sync_tree(tmp)
    if final.exists() and not final.is_symlink():
        check_replaceable(final, owned)
        _exchange(tmp, final)  # tmp now holds the old folder
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def check_replaceable(final: Path, owned: Collection[str]) -> None:
    """UserInputError unless ``final`` is a folder holding only files slimkit writes there."""
    if not final.is_dir() or final.is_symlink():
        raise UserInputError(f"{final} exists and is not a folder slimkit wrote; choose another path")
    foreign = foreign_files(final, owned)
    if foreign:
        raise UserInputError(f"{final} holds files slimkit did not write ({', '.join(foreign[:5])}); "
                             "slimkit never deletes them: choose another path or move them away")


@contextmanager
def locked(final: str | os.PathLike, *, wait: bool = False):
    """Hold ``.<name>.lock`` beside ``final`` for the block; if another process holds it, UserInputError at
    once (or, with ``wait``, wait for it). Re-entrant within a thread (a verb holds its --out while
    ``save`` writes into it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.with_name(f".{final.name}.lock")
    key, held = str(lock.resolve()), _held.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserInputError(f"another slimkit process is writing {final} now; wait for it or choose "
                                 "another output") from None
        if lock.exists() and os.stat(lock).st_ino == os.fstat(fd).st_ino:
            break  # the lock file was not removed by the previous holder between our open and flock
        os.close(fd)
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        lock.unlink(missing_ok=True)  # unlinked while held, so no one can lock a stale file
        os.close(fd)


def clear_stale(final: str | os.PathLike) -> Path:
    """Remove temporary siblings that killed writers of ``final`` left (call it holding ``locked(final)``);
    returns ``final``."""
    final = Path(final)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    return final


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling renamed into place (old or new, never half)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step where the kernel can; two renames otherwise."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return
    if renameat2 is not None and ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        raise OSError(ctypes.get_errno(), f"cannot swap {a} and {b}: {os.strerror(ctypes.get_errno())}")
    old = a.with_name(a.name + ".old")
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def _sync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
