"""The stale-lock check fails safe (xtc/study/driverlock.py): the lock of a killed driver goes, but a lock whose driver
cannot be inspected -- on another host, in a container, another user's, unreadable, or one that left no record --
stays, with one line saying how to remove it by hand. test_crash.py runs the real kill-and-rerun cases."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from xtc.study import driverlock

DRIVER = SimpleNamespace(is_main_process=True)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding Snakemake's lock files, as a driver leaves them."""
    monkeypatch.chdir(tmp_path)
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/x\n")
    (locks / "0.output.lock").write_text("results/y\n")
    past = time.time() - 60  # locked a minute ago, before the driver's onstart recorded it
    for path in locks.iterdir():
        os.utime(path, (past, past))
    return tmp_path


def _record(root: Path, **fields) -> dict:
    """A driver record as ``record_driver`` writes it, for this process on this machine unless ``fields`` say."""
    info = {**driverlock.this_machine(), "pid": os.getpid(), "start_time": driverlock._start_time(os.getpid()),
            "since": "2026-12-07T01:00:00+0000", "recorded": time.time() - 30, **fields}
    records = root / driverlock.RECORDS
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{info['host']}.{info['pid']}.json").write_text(json.dumps(info))
    return info


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _kept(workdir: Path, caplog, *phrases: str) -> None:
    caplog.clear()
    driverlock.clear_stale_lock(DRIVER)
    assert (workdir / ".snakemake" / "locks").is_dir()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"rm -r {workdir}/.snakemake/locks" in lines[0], lines
    for phrase in phrases:
        assert phrase in lines[0], lines


def test_the_lock_of_a_dead_driver_on_this_machine_is_removed(workdir, caplog):
    _record(workdir, pid=_dead_pid())
    driverlock.clear_stale_lock(DRIVER)
    assert not (workdir / ".snakemake" / "locks").exists() and not (workdir / driverlock.RECORDS).exists()
    assert "removed the stale lock" in caplog.text


def test_a_driver_on_another_host_is_presumed_alive(workdir, caplog):
    _record(workdir, host="login2.cluster", pid=_dead_pid())  # its PID means nothing here
    _kept(workdir, caplog, "another host or boot", "PID", "login2.cluster")


def test_a_driver_in_another_pid_namespace_is_presumed_alive(workdir, caplog):
    _record(workdir, pid_ns="pid:[4026532999]", pid=_dead_pid())
    _kept(workdir, caplog, "another PID namespace (a container)")


def test_another_users_driver_that_this_user_cannot_see_is_presumed_alive(workdir, caplog):
    _record(workdir, uid=os.getuid() + 1, pid=_dead_pid())  # hidepid hides other users' processes
    _kept(workdir, caplog, f"user {os.getuid() + 1}")


def test_a_driver_whose_process_cannot_be_read_is_presumed_alive(workdir, caplog, monkeypatch):
    live = subprocess.Popen(["sleep", "30"])
    try:
        _record(workdir, pid=live.pid, start_time=driverlock._start_time(live.pid))
        monkeypatch.setattr(driverlock, "_start_time", lambda pid: None)  # /proc/<pid>/stat unreadable
        _kept(workdir, caplog, f"PID {live.pid}", "cannot be read")
    finally:
        live.kill()


def test_a_reused_pid_is_not_the_driver(workdir):
    live = subprocess.Popen(["sleep", "30"])
    try:
        _record(workdir, pid=live.pid, start_time="1")  # the recorded driver started at tick 1, this one later
        driverlock.clear_stale_lock(DRIVER)
        assert not (workdir / ".snakemake" / "locks").exists()
    finally:
        live.kill()


def test_a_snakemake_whose_working_directory_cannot_be_read_is_presumed_to_hold_it(workdir, caplog, monkeypatch):
    """Another user's snakemake: its command line is readable, its /proc/<pid>/cwd is not."""
    other = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 30"])
    try:
        time.sleep(0.2)
        _record(workdir, pid=_dead_pid())

        def cwd(pid):
            if pid == other.pid:
                raise PermissionError(f"/proc/{pid}/cwd")
            return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()

        monkeypatch.setattr(driverlock, "_cwd", cwd)
        _kept(workdir, caplog, f"PID {other.pid}, whose working directory cannot be read")
    finally:
        other.kill()


def test_a_lock_newer_than_every_record_is_presumed_alive(workdir, caplog):
    """A driver that locked after the last record was written (killed before its onstart, or still starting)."""
    _record(workdir, pid=_dead_pid(), recorded=time.time() - 600)
    _kept(workdir, caplog, "left no record")


def test_the_record_a_driver_writes_describes_it_as_alive(workdir):
    path = driverlock.record_driver(DRIVER, workdir)
    info = json.loads(path.read_text())
    assert info["pid"] == os.getpid() and driverlock.driver_status(info).startswith("a live snakemake, PID")
