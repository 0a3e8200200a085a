"""Joining and leaving a torch.distributed run started by ``torchrun``, and failing fast when a rank dies.

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in every process it
starts; ``init`` reads them, picks the backend (nccl on GPUs, gloo on CPUs) and sets a timeout on
every collective, so that a rank that died makes the others stop with an error instead of hanging.

Example (in a script run by ``torchrun --nproc-per-node 2 script.py``):
    >>> info = init()  # doctest: +SKIP
    >>> with collective_guard(info):  # doctest: +SKIP
    ...     torch.distributed.all_reduce(torch.ones(1))
    >>> destroy()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from slimkit.errors import SlimkitError, UserInputError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")


class RankFailure(SlimkitError):
    """Another rank died or stopped answering; this rank stops too."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    timeout_s: float


def torchrun_command(nproc: int = 2, script: str = "your_script.py") -> str:
    """The command that starts ``script`` on ``nproc`` processes of this machine."""
    return f"torchrun --standalone --nproc-per-node {nproc} {script}"


def check_env() -> None:
    """Raise a UserInputError naming the torchrun command when a torchrun variable is missing."""
    missing = [name for name in ENV if name not in os.environ]
    if missing:
        raise UserInputError(f"not started by torchrun: {', '.join(missing)} unset; launch with "
                             f"`{torchrun_command()}` (or `slimkit train --nproc 2 ...`)")


def init(backend: str | None = None, timeout_s: float = 60.0) -> DistInfo:
    """Join the process group torchrun describes; ``timeout_s`` bounds every collective.

    The backend defaults to nccl when CUDA is available, else gloo.
    """
    check_env()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise UserInputError(f"backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if not timeout_s > 0:
        raise UserInputError(f"timeout_s={timeout_s} must be positive")
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu")
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise UserInputError(f"local rank {local_rank} needs GPU {local_rank}, but {torch.cuda.device_count()} "
                                 "are visible: start at most one process per GPU, or use backend='gloo' (CPU)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, device, timeout_s)


def destroy() -> None:
    """Leave the process group (a no-op outside one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def collective_guard(info: DistInfo):
    """Turn a collective that failed because a peer died or timed out into one clear RankFailure."""
    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        if not _is_peer_failure(exc):
            raise
        text = str(exc).strip() or type(exc).__name__
        cause = text.splitlines()[0].split(". ")[0][:200]  # gloo/nccl's first sentence names the peer
        raise RankFailure(f"rank {info.rank} of {info.world_size}: another rank died or did not answer within "
                          f"{info.timeout_s:g} s ({cause}); stopping this rank too. The failed rank's own "
                          "error is in its log above.") from None


def check_peers(info: DistInfo) -> None:
    """A barrier that names the ranks that did not arrive within the timeout (gloo), else a plain barrier."""
    with collective_guard(info):
        if info.backend == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=info.timeout_s), wait_all_ranks=True)
        else:
            dist.barrier()


def _is_peer_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(word in text for word in (
        "connection", "timed out", "timeout", "peer", "closed", "gloo", "nccl", "monitored"))
