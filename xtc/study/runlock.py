"""One trainer per run directory: a live owner holds an exclusive ``flock`` on ``<run dir>/.owner``.

After a crashed workflow an orphaned ``xtc`` (or a SLURM job the killed ``snakemake`` left running) may still
train into a run directory when the next workflow starts the same job again. The new process finds the lock
held, logs who holds it (PID, host, SLURM job id, start time: the file's content) and waits for it to end; then
the directory holds a finished run (nothing to do) or a resumable state. The kernel drops the lock when its
holder dies, even by ``kill -9``, so a stale file never blocks anyone. The file stays, emptied, when its owner
exits, and a run directory is only ever emptied around it (``xtc.study.rundir``), never deleted, so its lock holds while
the run is replaced.

Across nodes: on NFS Linux turns ``flock`` into NFS byte-range locks, which hold cluster-wide unless the mount says
``nolock`` or ``local_lock=flock|all``; on Lustre they hold cluster-wide with the ``flock`` mount option, not with
``localflock`` (or none). ``lock_scope`` reads the mount options; the workflow warns at onstart where the lock is
node-local (``xtc.study.cluster.check_lock_scope``).
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


# ---------------------------------------------------------------------------------------------- across nodes
def _mount_of(path: Path, mounts: str) -> tuple[str, str, set[str]]:
    """(mount point, file system type, options) of the mount holding ``path``, from ``/proc/mounts`` text."""
    path, best = Path(path).resolve(), ("/", "", set())
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best[0]):
            best = (point, fields[2], set(fields[3].split(",")))
    return best


def lock_scope(path: Path, mounts: str | None = None) -> str | None:
    """Why a run lock under ``path`` holds on this node only (a mount option), or None where it holds for every
    node that mounts it (NFS with a lock manager, Lustre with ``flock``) or the disk is local to one node."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    point, fstype, options = _mount_of(path, mounts)
    if fstype.startswith("nfs") and ("nolock" in options or {"local_lock=flock", "local_lock=all"} & options):
        return f"{point} is NFS mounted with {sorted(options & {'nolock', 'local_lock=flock', 'local_lock=all'})[0]}"
    if fstype == "lustre" and "flock" not in options:
        return f"{point} is Lustre mounted {'with localflock' if 'localflock' in options else 'without flock'}"
    return None
