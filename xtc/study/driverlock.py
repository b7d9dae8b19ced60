"""Is the ``.snakemake/locks`` a killed ``snakemake`` left stale, or held by a live one? Fail safe: when in doubt, live.

Snakemake locks its working directory for the run of one ``snakemake`` (the driver). A driver killed with ``-9``
(a closed terminal, an OOM kill, a node reboot) leaves the lock behind, and the next run would stop and ask for
``--unlock``. ``clear_stale_lock`` (the Snakefile calls it at parse, before Snakemake takes its lock) removes the
lock only when it can prove that no driver holds it:

* every driver records itself at onstart (``record_driver``) in ``.snakemake/xtc-drivers/<host>.<pid>.json``:
  host, boot, PID namespace, user, PID and the process's start time; the record goes when the driver exits;
* a recorded driver is dead only when its process is visibly gone from this machine's ``/proc`` (or the PID now
  belongs to a younger process); a driver on another host, in another PID namespace (a container), of another user
  (``hidepid`` hides their processes), or whose process cannot be read, is presumed alive;
* any other ``snakemake`` that works in this directory, or whose directory cannot be read, is presumed to hold it;
* a lock newer than every record (a driver killed before its onstart, or one that left no record) is presumed live.

What stays is reported in one line with how to remove the lock by hand when the user knows its driver is dead.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger("snakemake.xtc")
RECORDS = Path(".snakemake") / "xtc-drivers"


# ---------------------------------------------------------------------------------------------- this machine
def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def this_machine() -> dict[str, object]:
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {"host": socket.gethostname(), "boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": pidns,
            "uid": os.getuid()}


# ---------------------------------------------------------------------------------------------- driver records
def record_driver(workflow, root: Path | None = None) -> Path | None:
    """Record this driver (onstart, when it holds the lock); the record is removed when it exits normally."""
    if not workflow.is_main_process:
        return None
    records = Path(root or Path.cwd()) / RECORDS
    records.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path = records / f"{socket.gethostname()}.{pid}.json"
    info = {**this_machine(), "pid": pid, "start_time": _start_time(pid), "cwd": str(Path.cwd()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recorded": time.time()}
    path.write_text(json.dumps(info))
    atexit.register(lambda: path.unlink(missing_ok=True))
    return path


def driver_status(info: dict[str, object]) -> str | None:
    """None when the recorded driver is provably dead; else why it must be presumed alive."""
    here = this_machine()
    who = f"PID {info.get('pid')} on {info.get('host')} (since {info.get('since')})"
    if info.get("host") != here["host"] or info.get("boot_id") != here["boot_id"]:
        return f"a snakemake on another host or boot, {who}, which cannot be inspected from here"
    if info.get("pid_ns") != here["pid_ns"]:
        return f"a snakemake in another PID namespace (a container), {who}, which cannot be inspected from here"
    pid = int(info.get("pid", 0))
    if not Path(f"/proc/{pid}").exists():
        if info.get("uid") != here["uid"]:  # another user's processes may be hidden (mount option hidepid)
            return f"a snakemake of user {info.get('uid')}, {who}, whose processes may be hidden from this user"
        return None
    started = _start_time(pid)
    if started is None:
        return f"a snakemake, {who}, whose process cannot be read"
    if started != info.get("start_time"):
        return None  # the PID now belongs to a younger process
    return f"a live snakemake, {who}"


# ---------------------------------------------------------------------------------------------- other snakemakes
def _is_snakemake(argv: list[str]) -> bool:
    """A main ``snakemake`` process; the ones it spawns inside jobs (``--mode remote``, e.g. in SLURM jobs a killed
    run left behind) take no lock and do not count."""
    if any(a == "--mode" and b in ("remote", "subprocess") for a, b in zip(argv, argv[1:])):
        return False
    names = [os.path.basename(a) for a in argv[:3]]
    if names and names[0] == "snakemake":
        return True
    if names and names[0].startswith("python"):
        return (len(names) > 1 and names[1] == "snakemake") or argv[1:3] == ["-m", "snakemake"]
    return False


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _cwd(pid: int) -> Path:
    return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()


def other_snakemakes(workdir: Path) -> dict[int, str]:
    """Live ``snakemake`` processes (not this one or its parents) that work in ``workdir`` or whose working
    directory cannot be read (another user's, say): PID -> why it counts."""
    workdir, mine, found = Path(workdir).resolve(), _ancestors(), {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(proc.name)
            if pid in mine:
                continue
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except (OSError, ValueError):
            continue
        if not _is_snakemake(argv):
            continue
        try:
            if _cwd(pid) == workdir:
                found[pid] = f"a live snakemake, PID {pid}, working in {workdir}"
        except PermissionError:
            found[pid] = f"a snakemake, PID {pid}, whose working directory cannot be read"
        except (OSError, ValueError):
            continue
    return found


# ---------------------------------------------------------------------------------------------- the check
def holders(root: Path) -> list[str]:
    """Why the lock under ``root`` must be presumed held; empty when it is stale."""
    records = sorted((root / RECORDS).glob("*.json"))
    held, newest = [], 0.0
    for path in records:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        newest = max(newest, float(info.get("recorded", 0)))
        why = driver_status(info)
        if why:
            held.append(why)
    held += other_snakemakes(root).values()
    locks = [p for p in (root / ".snakemake" / "locks").iterdir()]
    if locks and max(p.stat().st_mtime for p in locks) > newest + 1:
        held.append("a snakemake that left no record (still starting, or killed before it started any job)")
    return held


def clear_stale_lock(workflow) -> None:
    """Remove ``.snakemake/locks`` that a killed ``snakemake`` left, when no driver can still hold it."""
    root = Path.cwd()
    locks = root / ".snakemake" / "locks"
    if not workflow.is_main_process or not locks.is_dir() or not any(locks.iterdir()):
        return
    if not Path("/proc/self/cwd").exists():
        return  # no /proc: cannot tell a live lock from a stale one; Snakemake's own message applies
    held = holders(root)
    if held:
        log.warning("%s is locked by %s; this run stops at the lock. If that snakemake no longer runs, remove the "
                    "lock by hand: rm -r %s", root, held[0], locks)
        return
    shutil.rmtree(locks)
    shutil.rmtree(root / RECORDS, ignore_errors=True)
    log.warning("removed the stale lock of a snakemake that no longer runs in %s", root)
