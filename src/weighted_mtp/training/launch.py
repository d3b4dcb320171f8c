"""`wmtp train --nproc N`: re-run the same command as N processes under torchrun, passing a
SIGTERM on so every process can stop at a step boundary with a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from weighted_mtp.log import get_logger
from weighted_mtp.training import checkpoint as ckpt

log = get_logger(__name__)


def launch(nproc: int, argv: list[str], run_dir: Path) -> int:
    """`wmtp train --nproc N`: the same command as N processes under torch.distributed.run
    (torchrun, standalone rendezvous on this machine). A SIGTERM is passed on: torchrun hands it
    to every process, they finish their step, save a checkpoint and end (torchrun kills them
    if that takes more than its grace period, 30 s; the previous checkpoint then stays intact).
    Exit status: torchrun's, except 0 when a SIGTERM ended the run with a stop checkpoint saved
    (torchrun itself reports a signal as a failure)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "weighted_mtp", *argv]
    env = os.environ.copy()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(cmd, env=env)
    signalled: list[float] = []

    def forward(signum, frame):
        signalled.append(time.time())
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # the terminal sent SIGINT to the workers too; let them end
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    if signalled and rc != 0:
        latest, pointer = ckpt.latest_checkpoint(run_dir), run_dir / ckpt.CHECKPOINT_DIR / "latest"
        if latest is not None and pointer.is_file() and pointer.stat().st_mtime >= signalled[0]:  # saved since
            log.warning(f"stopped by SIGTERM; checkpoint {latest}; continue with: wmtp train --resume {run_dir}")
            return 0
    return rc
