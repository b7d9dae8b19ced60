"""A crashed workflow recovers by itself. The tiny study (step 1 made long enough to be caught mid-training) is
killed with SIGKILL while the FP step-1 student trains, (a) together with every process it started (a closed
terminal, an OOM kill of the session) or (b) alone, its `xtc` children living on. The next run -- the command
`make demo` runs, `snakemake --cores 2`, nothing added -- finishes the study: the stale lock goes because no other
snakemake works there (xtc/study/cluster.py), incomplete jobs rerun (profiles/default) and resume from the run
directory's saved state, a rerun job waits while an orphan still trains into its run directory (xtc/study/runlock.py),
nothing finished is retrained, and the tables equal an uninterrupted run's. The run-directory lock itself is
tested directly at the end."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tinystudy import BIN, REPO, tiny

from xtc.study import runlock

TEACHER = "results/teachers/task~rte/seed~42"
STEP1 = "results/runs/task~rte/layers~2/wbits~fp/abits~fp/kd~one_stage/epochs~12/lr~0.001/da~0/seed~42"
COMMAND = [str(BIN / "snakemake"), "--cores", "2", "--configfile", ".test/config.yaml"]
TABLES = ("results/tiny/runs.tsv", "results/tables/tiny.csv", "results/tables/tiny.md", "results/scores/tiny.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The workflow, its workflow profile and inputs; step 1 trains 12 epochs of 40 steps (a checkpoint each)."""
    workdir = tiny.copy_workflow(tmp_path_factory.mktemp("inputs"), extra=("profiles",))
    tiny.make_inputs(workdir, train_rows=640)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["step1"]["epochs"], config["train"]["eval_every"] = 12, 40
    config["grid"]["layers"] = [2]  # teacher -> FP step 1 -> W1A8 2-layer student -> export -> evaluation
    (workdir / ".test" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def _copy(inputs: Path, dest: Path) -> Path:
    shutil.copytree(inputs, dest)
    return dest


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    workdir = _copy(inputs, tmp_path_factory.mktemp("reference") / "study")
    done = subprocess.run(COMMAND, cwd=workdir, env=tiny.workflow_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    return {t: (workdir / t).read_text() for t in TABLES}


def _start_and_catch_step1(workdir: Path, mark: str) -> subprocess.Popen:
    """Start the study in its own session; return once step 1 has written ``mark`` (its owner file: it started
    training; its saved state: it can resume) and still trains."""
    log = (workdir.parent / "first.log").open("w")
    proc = subprocess.Popen(COMMAND, cwd=workdir, env=tiny.workflow_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    path, deadline = workdir / STEP1 / mark, time.monotonic() + 400
    while not (path.is_file() and path.stat().st_size) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first = (workdir.parent / "first.log").read_text()[-3000:]
    assert path.is_file() and not (workdir / STEP1 / "metrics.json").exists(), first
    return proc


def _session(sid: int) -> list[int]:
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.getsid(int(proc.name)) == sid:
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def _kill_session(sid: int) -> None:
    for pid in _session(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rerun(workdir: Path) -> str:
    done = subprocess.run(COMMAND, cwd=workdir, env=tiny.workflow_env(), capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "--unlock" not in output and "--rerun-incomplete" not in output
    return output


def test_crash_whole_process_group_killed_then_next_run_finishes(inputs, reference, tmp_path):
    workdir = _copy(inputs, tmp_path / "study")
    proc = _start_and_catch_step1(workdir, "state/train_state.pt")
    teacher = (workdir / TEACHER / "metrics.json").stat().st_mtime_ns
    _kill_session(proc.pid)  # snakemake and every process it started, at once
    proc.wait()
    deadline = time.monotonic() + 30
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any((workdir / ".snakemake" / "locks").iterdir())  # the stale lock of the killed run

    output = _rerun(workdir)
    assert "removed the stale lock" in output
    step1_log = (workdir / "results/logs" / STEP1.removeprefix("results/") / "distill.log").read_text()
    assert "resuming" in step1_log  # from its saved state, not from scratch
    assert (workdir / TEACHER / "metrics.json").stat().st_mtime_ns == teacher  # finished: not retrained
    assert {t: (workdir / t).read_text() for t in TABLES} == reference


def test_crash_snakemake_alone_killed_children_live_on(inputs, reference, tmp_path):
    workdir = _copy(inputs, tmp_path / "study")
    proc = _start_and_catch_step1(workdir, runlock.OWNER)
    teacher = (workdir / TEACHER / "metrics.json").stat().st_mtime_ns
    try:
        os.kill(proc.pid, signal.SIGKILL)  # snakemake only
        proc.wait()
        orphans = [pid for pid in _session(proc.pid) if b"xtc" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        owner = runlock.read_owner(workdir / STEP1)
        assert owner and owner["pid"] in orphans  # step 1 still trains into its run directory
        # Hold the orphan still so that it is surely alive when the rerun reaches its run directory.
        os.kill(owner["pid"], signal.SIGSTOP)
        log = tmp_path / "rerun.log"
        with log.open("w") as out:
            rerun = subprocess.Popen(COMMAND, cwd=workdir, env=tiny.workflow_env(), stdout=out,
                                     stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            while "waiting for it to finish" not in log.read_text() and rerun.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(owner["pid"], signal.SIGCONT)
            assert rerun.wait(timeout=600) == 0, log.read_text()[-5000:]
        output = log.read_text()
        # the rerun step-1 job found the orphan's lock and waited for it instead of training alongside
        assert f"is being trained by PID {owner['pid']}" in output and "waiting for it to finish" in output
        assert "already holds a finished run" in output  # ... and then found the orphan's finished run
        assert "removed the stale lock" in output
        assert "--unlock" not in output and "--rerun-incomplete" not in output
    finally:
        _kill_session(proc.pid)  # nothing is left behind if an assertion failed
    assert (workdir / TEACHER / "metrics.json").stat().st_mtime_ns == teacher
    assert {t: (workdir / t).read_text() for t in TABLES} == reference


# ------------------------------------------------------------------------------------------------ the lock itself
HOLD = """
import sys, time
from xtc.study import runlock
runlock.hold_run_dir(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_crash_run_dir_lock_waits_for_a_live_owner_and_ignores_a_dead_one(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "30"], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = runlock.read_owner(out)
        assert owner["pid"] == holder.pid
        with pytest.raises(RuntimeError, match=f"is being trained by PID {holder.pid} on "):
            runlock.hold_run_dir(out, wait=False)  # a live owner: refused (or waited for, by default)
        holder.send_signal(signal.SIGKILL)  # the owner dies without cleaning up
        holder.wait()
        started = time.monotonic()
        runlock.hold_run_dir(out)  # its stale file blocks nothing
        assert time.monotonic() - started < 5
        assert runlock.read_owner(out)["pid"] == os.getpid()
    finally:
        holder.kill()
        runlock.release_all()
    assert (out / runlock.OWNER).read_text() == ""  # emptied at release


def test_crash_waiting_trainer_continues_after_the_owner(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "2"], env=env, stdout=subprocess.PIPE,
                             text=True)
    assert first.stdout.readline().strip() == "held"
    second = subprocess.run([sys.executable, "-c", HOLD, str(out), "0"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert first.wait(timeout=30) == 0 and second.returncode == 0
    assert f"is being trained by PID {first.pid}" in second.stderr and "waiting for it to finish" in second.stderr
