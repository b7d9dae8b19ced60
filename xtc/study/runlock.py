"""One trainer per run directory: a live owner holds an exclusive ``flock`` on ``<run dir>/.owner``.

After a crashed workflow an orphaned ``xtc`` (or a SLURM job the killed ``snakemake`` left running) may still
train into a run directory when the next workflow starts the same job again. The new process finds the lock
held, logs who holds it (PID, host, SLURM job id, start time: the file's content) and waits for it to end; then
the directory holds a finished run (nothing to do) or a resumable state. The kernel drops the lock when its
holder dies, even by ``kill -9``, so a stale file never blocks anyone. Works on local disks and on NFS (Linux
emulates ``flock`` with NFS byte-range locks). The file stays, emptied, when its owner exits.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

OWNER = ".owner"
_held: dict[Path, int] = {}


def _owner_info() -> dict[str, object]:
    job = os.environ.get("SLURM_JOB_ID")
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": job,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe(info: dict[str, object] | None) -> str:
    if not info:
        return "another process"
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"PID {info.get('pid')} on {info.get('host')}{job} (since {info.get('started')})"


def read_owner(out: Path) -> dict[str, object] | None:
    try:
        text = (Path(out) / OWNER).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def hold_run_dir(out: Path, wait: bool = True) -> None:
    """Become the only trainer of ``out`` for the rest of this process; wait for a live owner (or refuse)."""
    out = Path(out).resolve()
    if out in _held:
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = describe(read_owner(out))
        if not wait:
            os.close(fd)
            raise RuntimeError(f"{out} is being trained by {owner}; wait for it to finish or stop that process")
        log.warning("%s is being trained by %s (perhaps left running by a killed workflow); waiting for it to "
                    "finish", out, owner)
        fcntl.flock(fd, fcntl.LOCK_EX)
        log.info("%s is free; continuing", out)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_owner_info()).encode(), 0)
    _held[out] = fd
    if len(_held) == 1:
        atexit.register(release_all)


def release_all() -> None:
    """Empty and unlock every held owner file (at exit; a killed process releases by dying)."""
    for fd in _held.values():
        try:
            os.ftruncate(fd, 0)
            os.close(fd)
        except OSError:
            pass
    _held.clear()
