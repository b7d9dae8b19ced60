"""The workflow's SLURM guards without a cluster (xtc/study/cluster.py, xtc/study/runlock.py's lock scope): time
limits, partitions, the named-study rule, node-local locks, and keep-going's list of failed jobs with a real
Snakemake. The same guards against a real SLURM: tests/test_slurm.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("snakemake")
from snakemake.exceptions import WorkflowError  # noqa: E402

from xtc.study import cluster  # noqa: E402
from xtc.study.runlock import lock_scope  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("limit, minutes", [("infinite", float("inf")), ("UNLIMITED", float("inf")), ("30", 30),
                                            ("1:00", 1), ("5:30", 5.5), ("2:00:00", 120), ("1-00:00:00", 1440),
                                            ("2-12", 3600)])
def test_slurm_time_limits_in_minutes(limit, minutes):
    assert cluster._minutes(limit) == minutes


def _job(rule, runtime, mem_mb, gpu=0, partition="", local=False, **wildcards):
    resources = {"runtime": runtime, "mem_mb": mem_mb, "gpu": gpu, "slurm_partition": partition}
    return SimpleNamespace(rule=SimpleNamespace(name=rule), wildcards=wildcards, is_local=local, resources=resources)


def test_largest_request_of_each_partition():
    jobs = [_job("distill", 600, 16000, 1, "gpu", task="mnli"), _job("distill", 90, 24000, 1, "gpu", task="rte"),
            _job("export", 10, 4000, 0, "cpu", task="mnli"), _job("runs_table", 999, 1, local=True),
            _job("finetune_teacher", 30, 8000, 1, "", task="rte")]
    largest = cluster.largest_requests(jobs, default_partition="")
    assert largest == {
        "gpu": {"runtime": (600, "distill (task=mnli)"), "mem_mb": (24000, "distill (task=rte)"),
                "gpu": (1, "distill (task=mnli)")},
        "cpu": {"runtime": (10, "export (task=mnli)"), "mem_mb": (4000, "export (task=mnli)"),
                "gpu": (0, "export (task=mnli)")},
        "": {"runtime": (30, "finetune_teacher (task=rte)"), "mem_mb": (8000, "finetune_teacher (task=rte)"),
             "gpu": (1, "finetune_teacher (task=rte)")},
    }  # the local job never reaches SLURM


def test_cpu_only_jobs_go_to_the_cpu_partition_when_one_is_named(monkeypatch):
    workflow = SimpleNamespace(resource_settings=SimpleNamespace(default_resources=SimpleNamespace(
        args=["slurm_partition=__import__('os').environ.get('SBATCH_PARTITION', '')"])))
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.delenv("XTC_CPU_PARTITION", raising=False)
    assert cluster.partition(workflow, gpu=0) == cluster.partition(workflow, gpu=1) == "gpu"
    monkeypatch.setenv("XTC_CPU_PARTITION", "cpu")
    assert (cluster.partition(workflow, gpu=0), cluster.partition(workflow, gpu=1)) == ("cpu", "gpu")
    assert cluster.partitions(workflow, gpu=1) == {"gpu": "gpu", "cpu": "cpu"}
    assert cluster.partitions(workflow, gpu=0) == {"gpu": "cpu", "cpu": "cpu"}  # a CPU-only study: every job


def test_under_slurm_the_default_study_must_be_named():
    slurm = SimpleNamespace(executor_plugin=SimpleNamespace(name="slurm"), is_main_process=True, basedir=str(REPO))
    local = SimpleNamespace(executor_plugin=SimpleNamespace(name="local"), is_main_process=True, basedir=str(REPO))
    cluster.require_named_study(local, named=False)  # make demo, snakemake --cores 2: the demo
    cluster.require_named_study(slurm, named=True)
    with pytest.raises(WorkflowError) as refused:
        cluster.require_named_study(slurm, named=False)
    assert str(refused.value).startswith("no study named: without --configfile this is the CPU demo")
    assert "--configfile config/studies/{all|budget|kd-variants|layer-reduction|lr|xtc-main}.yaml" in str(refused.value)
    assert "\n" not in str(refused.value)


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
nfs1:/home /home nfs4 rw,relatime,vers=4.2,local_lock=none 0 0
nfs2:/scratch /scratch nfs rw,nolock,vers=3 0 0
10.0.0.1@tcp:/lustre /lustre lustre rw,localflock 0 0
10.0.0.1@tcp:/work /lustre/work lustre rw,flock 0 0
"""


@pytest.mark.parametrize("path, reason", [
    ("/home/me/xtc", None), ("/tmp/xtc", None), ("/scratch/me/xtc", "/scratch is NFS mounted with nolock"),
    ("/lustre/me/xtc", "/lustre is Lustre mounted with localflock"), ("/lustre/work/xtc", None),
])
def test_run_locks_are_node_local_on_these_mounts(path, reason):
    assert lock_scope(Path(path), MOUNTS) == reason


KEEP_GOING = """
from xtc.study.cluster import report_failures

rule all:
    input: "a.txt", "b.txt", "c.txt"

rule ok:
    output: "{name,[ac]}.txt"
    shell: "echo {wildcards.name} > {output}"

rule bad:
    output: "b.txt"
    log: "logs/b.log"
    shell: "echo broken > {log}; exit 3"

onerror:
    report_failures(workflow, log)
"""


def test_keep_going_lists_the_failed_jobs_at_the_end_and_in_the_log(tmp_path):
    (tmp_path / "Snakefile").write_text(KEEP_GOING)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    done = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--keep-going", "--retries", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert (tmp_path / "a.txt").is_file() and (tmp_path / "c.txt").is_file()  # the others ran on
    tail = done.stderr[done.stderr.index("1 job(s) failed"):]
    assert "failed: rule bad (no wildcards): logs/b.log" in tail, done.stderr[-2000:]
    log = next((tmp_path / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    assert "failed: rule bad (no wildcards): logs/b.log" in log
