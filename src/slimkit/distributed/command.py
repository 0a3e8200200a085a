"""``slimkit train --nproc N``: the command re-runs itself under torchrun on N processes of this machine.

Outside torchrun, ``launch_or_join`` starts ``python -m torch.distributed.run --standalone
--nproc-per-node N -m slimkit.cli <the same arguments>`` and returns its exit code. Inside (each
rank), it joins the process group; rank 0 alone prints, logs and saves (``--out``, ``--log-dir``);
``--threads`` is shared out between the ranks.

Example:
    $ slimkit train --model mlp --scratch --steps 300 --batch-size 64 --nproc 2
"""

from __future__ import annotations

import os
import subprocess
import sys

from slimkit.distributed.launch import ENV, init
from slimkit.errors import UserInputError


def launch_or_join(args) -> int | None:
    """An exit code when this process started the N ranks (and waited for them); None in a rank, which
    then runs the command itself with ``args`` adjusted for its rank."""
    if not all(name in os.environ for name in ENV):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(args.nproc), "-m", "slimkit.cli", "--", *sys.argv[1:]]
        return subprocess.call(command)
    info = init()
    if info.world_size != args.nproc:
        raise UserInputError(f"--nproc {args.nproc}, but torchrun started {info.world_size} processes; "
                             "give the same number to both (or leave torchrun out: --nproc re-launches itself)")
    args.threads = max(1, args.threads // info.world_size)
    if info.rank:
        args.out = args.log_dir = None
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this rank's process
    return None
