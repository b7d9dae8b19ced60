"""A private one-node SLURM for the tests, from Debian's packages (slurm-wlm, munge, slurmdbd, mariadb-server).

Everything lives in one temporary directory: a MariaDB data dir (TCP on 127.0.0.1, a free port), a munge key and
socket, slurm.conf / slurmdbd.conf / gres.conf reached through ``SLURM_CONF``, state, spool, logs and PID files.
munged, mariadbd, slurmdbd, slurmctld and slurmd run in the foreground of their own process groups, started here
and stopped by their PIDs; nothing in /etc or a database someone else runs is touched. The node declares one GPU
without hardware (``GresTypes=gpu``, ``Gres=gpu:1``, ``gres.conf`` ``File=/dev/null``), so ``--gpus=1`` is
accepted, scheduled and accounted. Accounts: ``xtcdefault`` (root's default) and ``xtcother``; partitions over the
one node: ``gpu`` (the default), ``cpu`` (for CPU-only jobs) and ``short`` (``MaxTime`` of 1 minute, for the
walltime pre-flight). Needs root (slurmd starts jobs as their user) -- ``python tests/slurm_cluster.py`` brings one
up by hand and prints the environment to use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
HOW_TO_RUN = ("run `make test` as root (it installs them with apt-get), or `apt-get install -y "
              + " ".join(PACKAGES) + "` and run the tests as root")


def missing() -> str | None:
    """Why a real SLURM cannot be started here, or None."""
    absent = [d for d in DAEMONS if shutil.which(d, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if absent:
        return f"no real SLURM here ({', '.join(absent)} not installed): {HOW_TO_RUN}"
    if os.geteuid() != 0:
        return f"the one-node SLURM needs root (slurmd runs jobs as their user): {HOW_TO_RUN}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


class OneNodeSlurm:
    ACCOUNT, OTHER_ACCOUNT, PARTITION, CLUSTER, NODE = "xtcdefault", "xtcother", "gpu", "xtc", "xtcnode"
    CPU_PARTITION, SHORT_PARTITION = "cpu", "short"

    def __init__(self, root: Path, cpus: int = 4, mem_mb: int = 8000) -> None:
        self.root = Path(root)
        self.cpus, self.mem_mb = cpus, mem_mb
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_"))}
        self.env["SLURM_CONF"] = str(self.conf)

    # ------------------------------------------------------------------------------------------------ set-up
    def _write_files(self) -> None:
        r = self.root
        for sub in ("etc", "state", "spool", "log", "run", "munge", "db"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = r / "munge" / "munge.socket"
        self.db_port, self.dbd_port = _free_port(), _free_port()
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        host = socket.gethostname().split(".")[0]
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        self.conf.write_text(
            f"ClusterName={self.CLUSTER}\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n"
            f"SlurmctldPort={self.ctld_port}\nSlurmdPort={self.slurmd_port}\n{auth}CredType=cred/munge\n"
            f"StateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool/%n\n"
            f"SlurmctldPidFile={r}/run/slurmctld.pid\nSlurmdPidFile={r}/run/slurmd.pid\n"
            f"SlurmctldLogFile={r}/log/slurmctld.log\nSlurmdLogFile={r}/log/slurmd.log\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSwitchType=switch/none\nMpiDefault=none\n"
            "SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
            "SlurmdParameters=config_overrides\nReturnToService=2\nGresTypes=gpu\n"
            "JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
            f"AccountingStoragePort={self.dbd_port}\nAccountingStoragePass={self.munge_socket}\n"
            "AccountingStorageTRES=gres/gpu\nAccountingStorageEnforce=associations\nAccountingStoreFlags=job_comment\n"
            "MinJobAge=300\nKillWait=2\nInactiveLimit=0\nSlurmdTimeout=300\nSchedulerParameters=sched_interval=2\n"
            f"NodeName={self.NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.mem_mb} Gres=gpu:1 State=UNKNOWN\n"
            f"PartitionName={self.PARTITION} Nodes={self.NODE} Default=YES MaxTime=INFINITE State=UP\n"
            f"PartitionName={self.CPU_PARTITION} Nodes={self.NODE} MaxTime=INFINITE State=UP\n"
            f"PartitionName={self.SHORT_PARTITION} Nodes={self.NODE} MaxTime=1 State=UP\n"
        )
        (r / "etc" / "gres.conf").write_text(f"NodeName={self.NODE} Name=gpu File=/dev/null\n")
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"{auth}DbdHost=localhost\nDbdPort={self.dbd_port}\nSlurmUser=root\n"
            f"PidFile={r}/run/slurmdbd.pid\nLogFile={r}/log/slurmdbd.log\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={self.db_port}\n"
            "StorageUser=root\nStorageLoc=slurm_acct_db\n"
        )
        os.chmod(dbd, 0o600)
        # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable, SLURM_CONF included, before its
        # nested `srun`; a real cluster's srun finds /etc/slurm/slurm.conf (or configless slurmd), this private one
        # only through SLURM_CONF. So jobs see the real srun behind a one-line shim that sets it again.
        self.bin = r / "bin"
        self.bin.mkdir(exist_ok=True)
        (self.bin / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        os.chmod(self.bin / "srun", 0o755)

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_for(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}; "
                                       f"logs in {self.root / 'log'}: {self._tail()}")
            if check():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.root / 'log'}: {self._tail()}")

    def _tail(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-600:]}"
                          for p in sorted((self.root / "log").glob("*")) if p.stat().st_size)

    def run(self, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run([_which(argv[0]) or argv[0], *argv[1:]], env=kw.pop("env", self.env),
                              capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
        return done

    def _ok(self, *argv: str) -> bool:
        try:
            return self.run(*argv, check=False, timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> "OneNodeSlurm":
        self._write_files()
        r = self.root
        self._start("munged", [_which("munged"), "--foreground", "--force", f"--key-file={r}/munge/munge.key",
                               f"--socket={self.munge_socket}", f"--pid-file={r}/run/munged.pid",
                               f"--seed-file={r}/munge/munge.seed", f"--log-file={r}/log/munged.log"])
        self._wait_for("munged", self.munge_socket.exists)
        self.run("mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={r}/db",
                 "--auth-root-authentication-method=normal", "--skip-test-db", timeout=120)
        self._start("mariadbd", [_which("mariadbd"), "--no-defaults", "--user=root", f"--datadir={r}/db",
                                 f"--socket={r}/run/mysqld.sock", f"--pid-file={r}/run/mysqld.pid",
                                 f"--port={self.db_port}", "--bind-address=127.0.0.1", "--skip-grant-tables",
                                 "--innodb-buffer-pool-size=64M", f"--log-error={r}/log/mariadbd.log"])
        self._wait_for("mariadbd", lambda: _port_open(self.db_port))
        self._start("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait_for("slurmdbd", lambda: _port_open(self.dbd_port))
        self._wait_for("sacctmgr", lambda: self._ok("sacctmgr", "-i", "add", "cluster", self.CLUSTER))
        self.run("sacctmgr", "-i", "add", "account", self.ACCOUNT, self.OTHER_ACCOUNT)
        self.run("sacctmgr", "-i", "add", "user", "root", f"account={self.ACCOUNT},{self.OTHER_ACCOUNT}",
                 f"defaultaccount={self.ACCOUNT}")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self._wait_for("slurmctld", lambda: self._ok("scontrol", "ping"))
        self._start("slurmd", [_which("slurmd"), "-D", "-N", self.NODE])
        self._wait_for("the node to be idle", lambda: "idle" in self.run(
            "sinfo", "-h", "-N", "-o", "%T", check=False).stdout)
        return self

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user=root", check=False)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------------------------------------ queries
    def sacct(self, *fields: str, all_steps: bool = False) -> list[dict[str, str]]:
        """Accounting records of every job (allocations only unless all_steps), as dicts of ``fields``."""
        argv = ["sacct", "-a", "-P", "-n", "--starttime=2000-01-01", f"--format={','.join(fields)}"]
        out = self.run(*argv, *([] if all_steps else ["-X"])).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    import tempfile

    cluster = OneNodeSlurm(Path(tempfile.mkdtemp(prefix="xtc-slurm-"))).start()
    print(f"export SLURM_CONF={cluster.conf}   # one-node SLURM up; Ctrl-C stops it")
    try:
        signal.pause()
    finally:
        cluster.stop()
