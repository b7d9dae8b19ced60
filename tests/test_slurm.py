"""`snakemake --cores 8 --profile slurm` on a real one-node SLURM (tests/slurm_cluster.py: Debian's slurm-wlm,
munge, slurmdbd and MariaDB, private in a temporary directory, one GPU declared without hardware, partitions gpu,
cpu and short). Everything is asserted from SLURM's accounting (`sacct`): what ran where, with which GPU, memory,
time limit, account and partition, which job SLURM cancelled, which one stopped at its time limit's warning, and
that a refused command submitted nothing. `make test` installs the packages when it runs as root with apt-get
(as CI does); elsewhere these tests skip with the reason. Under CI (CI=true) or XTC_REQUIRE_SLURM=1 they must run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402

from tinystudy import BIN, REPO, tiny

REQUIRED = os.environ.get("CI") == "true" or os.environ.get("XTC_REQUIRE_SLURM") == "1"
TEACHER = "results/teachers/task~rte/seed~42"
FIELDS = ("JobIDRaw", "State", "Account", "Partition", "AllocTRES", "ReqMem", "Timelimit", "Comment", "WorkDir")
# the first command, as typed; the status-check delay only shortens the wait for these tiny jobs
FIRST_COMMAND = ["--cores", "8", "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"CI/XTC_REQUIRE_SLURM: the real-SLURM tests must run, but {reason}")
        pytest.skip(reason)
    started = time.monotonic()
    one_node = slurm_cluster.OneNodeSlurm(tmp_path_factory.mktemp("slurm")).start()
    print(f"one-node SLURM up in {time.monotonic() - started:.1f} s")
    yield one_node
    one_node.stop()


def _snakemake(cluster, workdir: Path, *args: str, timeout: int = 400, **env) -> subprocess.CompletedProcess:
    full_env = {**tiny.workflow_env(cluster.bin), "SLURM_CONF": str(cluster.conf), **env}
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=workdir, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def _jobs(cluster, workdir: Path) -> list[dict[str, str]]:
    """sacct's allocations started in ``workdir``, each with its rule (from the plugin's job comment)."""
    rows = [r for r in cluster.sacct(*FIELDS) if Path(r["WorkDir"]).resolve() == workdir.resolve()]
    for row in rows:
        row["rule"] = row["Comment"].split("_wildcards_")[0].removeprefix("rule_")
    return rows


def _requested(output: str) -> dict[str, set[tuple[str, str]]]:
    """rule -> {(mem_mb, runtime)} as Snakemake's job listing of this run asks for them."""
    asked: dict[str, set[tuple[str, str]]] = {}
    for block in output.split("\n\n"):
        rule, res = re.search(r"rule (\w+):", block), re.search(r"resources: (.*)", block)
        if rule and res:
            values = dict(kv.split("=", 1) for kv in res[1].split(", ") if "=" in kv)
            asked.setdefault(rule[1], set()).add((values.get("mem_mb"), values.get("runtime")))
    return asked


def _minutes(limit: str) -> int:
    h, m, s = (int(x) for x in limit.split("-")[-1].split(":"))
    return h * 60 + m + (s > 0)


# ------------------------------------------------------------------------------------------------ the tiny study
@pytest.fixture(scope="module")
def slurm_study(cluster, tmp_path_factory):
    """The tiny study (teacher -> W1A8 4-layer student -> export -> packed evaluation) through the repository's
    profile, the first command as typed: no account, no partition, so SLURM's defaults. The teacher trains long
    enough (8 epochs of 40 steps, a checkpoint each) to be cancelled by `scancel` after its first checkpoint; an
    uninterrupted local run of the same teacher is the reference."""
    workdir = tiny.copy_workflow(tmp_path_factory.mktemp("study"))
    tiny.make_inputs(workdir, train_rows=640)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["grid"]["layers"] = [4]
    config["teacher"]["epochs"], config["train"]["eval_every"] = 8, 40
    (workdir / ".test" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    reference = workdir.parent / "reference"
    shutil.copytree(workdir, reference)
    started = time.monotonic()
    local = subprocess.Popen([str(BIN / "snakemake"), f"{TEACHER}/metrics.json", "--cores", "1", "--configfile",
                              ".test/config.yaml"], cwd=reference, env=tiny.workflow_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = (workdir.parent / "study.log").open("w")
    env = {**tiny.workflow_env(cluster.bin), "SLURM_CONF": str(cluster.conf),
           "XTC_CPU_PARTITION": cluster.CPU_PARTITION}  # CPU-only jobs to the cpu partition
    run = subprocess.Popen([str(BIN / "snakemake"), *FIRST_COMMAND, "--configfile", ".test/config.yaml"],
                           cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        state = workdir / TEACHER / "state" / "train_state.pt"
        deadline = time.monotonic() + 300
        while not state.is_file() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        running = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %Z").stdout.splitlines()
        victim = [ln.split()[0] for ln in running if ln.strip() and Path(ln.split()[1]) == workdir]
        assert state.is_file() and len(victim) == 1, (Path(log.name).read_text()[-3000:], running)
        cluster.run("scancel", victim[0])
        assert run.wait(timeout=600) == 0, Path(log.name).read_text()[-5000:]
        assert local.wait(timeout=300) == 0
    finally:
        run.kill()
        local.kill()
    print(f"tiny study on SLURM, one job cancelled and resubmitted: {time.monotonic() - started:.1f} s")
    return workdir, reference, victim[0], Path(log.name).read_text()


def test_real_slurm_tiny_study_runs_as_the_rules_ask(cluster, slurm_study):
    workdir, _, victim, output = slurm_study
    assert "Using profile slurm" in output
    jobs = [j for j in _jobs(cluster, workdir) if j["JobIDRaw"] != victim]
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    # local rules (the runs table, tables and figures, the index rule) never reached SLURM
    assert {r: len(js) for r, js in by_rule.items()} == {
        "finetune_teacher": 1, "distill": 1, "export": 1, "evaluate_packed": 1, "serving_report": 1}
    asked = _requested(output)
    for job in jobs:
        assert job["State"] == "COMPLETED", job
        mem_runtimes = {(f"{m}M", int(t)) for m, t in asked[job["rule"]]}
        assert (job["ReqMem"], _minutes(job["Timelimit"])) in mem_runtimes, (job, asked[job["rule"]])
        # packing, packed evaluation and serving (the integer engine) run on CPU; training asks for the GPU
        cpu_only = job["rule"] in ("export", "evaluate_packed", "serving_report")
        assert ("gres/gpu=1" in job["AllocTRES"]) == (not cpu_only), job
    assert by_rule["distill"][0]["ReqMem"] == "2000M"  # resources.mem_mb of .test/config.yaml
    # all outputs are there, and a second run finds nothing to do
    for path in ("results/tiny/runs.tsv", "results/tables/tiny.md", "results/scores/tiny.json",
                 "figures/tiny_pareto.png", f"{TEACHER}/metrics.json"):
        assert (workdir / path).is_file(), path
    assert len(list((workdir / "results/runs").rglob("packed_eval/metrics.json"))) == 1
    again = _snakemake(cluster, workdir, "-n", *FIRST_COMMAND, "--configfile", ".test/config.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_real_slurm_first_command_as_typed_uses_slurm_defaults_and_the_cpu_partition(cluster, slurm_study):
    workdir, _, _, output = slurm_study
    assert "CHANGE_ME" not in (REPO / "slurm" / "config.v8+.yaml").read_text()  # no placeholder to reach sbatch
    jobs = _jobs(cluster, workdir)
    assert len(jobs) == 6  # 5 jobs (the serving report among them) and the cancelled teacher
    for job in jobs:  # root's default account (sacctmgr); GPU jobs in the default partition (sinfo), CPU-only jobs
        cpu_only = job["rule"] in ("export", "evaluate_packed", "serving_report")  # in XTC_CPU_PARTITION's
        assert job["Account"] == cluster.ACCOUNT, job
        assert job["Partition"] == (cluster.CPU_PARTITION if cpu_only else cluster.PARTITION), job
    assert "CHANGE_ME" not in output


def test_real_slurm_killed_job_is_resubmitted_and_resumes(cluster, slurm_study):
    workdir, reference, victim, _ = slurm_study
    teacher = {j["JobIDRaw"]: j["State"] for j in _jobs(cluster, workdir) if j["rule"] == "finetune_teacher"}
    assert len(teacher) == 2 and teacher.pop(victim).startswith("CANCELLED")  # scancel, then the profile's retry
    assert list(teacher.values()) == ["COMPLETED"]
    assert "resuming" in (workdir / "results/logs/teachers/task~rte/seed~42/finetune.log").read_text()
    resumed = json.loads((workdir / TEACHER / "metrics.json").read_text())
    uninterrupted = json.loads((reference / TEACHER / "metrics.json").read_text())
    for key in ("best", "last", "history"):
        assert resumed[key] == uninterrupted[key], key


def test_real_slurm_account_and_partition_from_the_environment(cluster, slurm_study):
    workdir, *_ = slurm_study
    before = {j["JobIDRaw"] for j in _jobs(cluster, workdir)}
    done = _snakemake(cluster, workdir, *FIRST_COMMAND, "--configfile", ".test/config.yaml", "--forcerun",
                      "evaluate_packed", SBATCH_ACCOUNT=cluster.OTHER_ACCOUNT, SBATCH_PARTITION=cluster.PARTITION)
    assert done.returncode == 0, done.stderr[-5000:]
    new = [j for j in _jobs(cluster, workdir) if j["JobIDRaw"] not in before]
    assert [j["rule"] for j in new] == ["evaluate_packed"]
    assert new[0]["Account"] == cluster.OTHER_ACCOUNT and new[0]["Partition"] == cluster.PARTITION, new


def test_real_slurm_missing_required_value_stops_before_submission(cluster, slurm_study):
    workdir, *_ = slurm_study
    before = len(_jobs(cluster, workdir))
    cluster.run("scontrol", "update", "PartitionName=gpu", "Default=NO")
    try:  # this cluster now needs a partition, and none is set
        done = _snakemake(cluster, workdir, *FIRST_COMMAND, "--configfile", ".test/config.yaml", "--forcerun",
                          "export")
    finally:
        cluster.run("scontrol", "update", "PartitionName=gpu", "Default=YES")
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if "slurm/config.v8+.yaml: SLURM refuses" in ln]
    assert len(lines) == 1 and "slurm_partition not set" in lines[0] and "SBATCH_PARTITION" in lines[0], done.stderr
    # a placeholder left in an edited profile stops the same way, naming the key
    done = _snakemake(cluster, workdir, *FIRST_COMMAND, "--configfile", ".test/config.yaml", "--forcerun",
                      "export", "--default-resources", "slurm_account='CHANGE_ME_account'")
    assert done.returncode != 0
    assert "slurm/config.v8+.yaml: default-resources slurm_account is still the placeholder" in done.stderr
    assert len(_jobs(cluster, workdir)) == before  # nothing was submitted


def test_real_slurm_the_command_without_a_study_stops_before_submission(cluster, slurm_study):
    """`snakemake --cores 8 --profile slurm` as typed, no --configfile: the default study is the CPU demo, so it
    stops with one line naming the study files and the flag, and SLURM sees no job."""
    workdir, *_ = slurm_study
    before = len(_jobs(cluster, workdir))
    done = _snakemake(cluster, workdir, *FIRST_COMMAND)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if "no study named" in ln]
    assert len(lines) == 1 and "--configfile config/studies/{" in lines[0] and "xtc-main" in lines[0], done.stderr
    assert len(_jobs(cluster, workdir)) == before


def test_real_slurm_walltime_preflight_stops_before_submission(cluster, slurm_study):
    """A partition whose MaxTime (1 minute) is below the study's longest request: one line naming the job, its
    request, the limit and the fix, and no job reaches sacct (this SLURM, like many, accepts such a job at
    submission and would leave it pending forever)."""
    workdir, *_ = slurm_study
    before = len(_jobs(cluster, workdir))
    done = _snakemake(cluster, workdir, *FIRST_COMMAND, "--configfile", ".test/config.yaml", "--forcerun",
                      "finetune_teacher", SBATCH_PARTITION=cluster.SHORT_PARTITION)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if "MaxTime" in ln]
    assert len(lines) == 1, done.stderr[-3000:]
    # the longest request: the export's 10 minutes (resources.overhead_minutes x 2), more than the teacher's
    assert lines[0].startswith("export (task=rte, layers=4, wbits=1, abits=8, kd=one_stage, epochs=1, lr=0.001, "
                               "da=0, seed=42) asks for 10 min, more than partition short's MaxTime of 1 min"), lines
    assert "export XTC_CPU_PARTITION=..." in lines[0] and "--set-resources export:runtime=1" in lines[0]
    assert len(_jobs(cluster, workdir)) == before


# ------------------------------------------------------------------------------------- time limit: warn, save, resume
SIGNAL_TEACHER_EPOCHS = 60  # 2,400 steps: about a minute on a 2-core VM, longer than the first attempt's limit


@pytest.fixture(scope="module")
def time_limited(cluster, tmp_path_factory):
    """The tiny teacher trained on SLURM with a 1-minute limit on its first attempt (20 on the retry) and the
    profile's warning signal 10 s ahead; an uninterrupted local run of the same teacher is the reference."""
    workdir = tiny.copy_workflow(tmp_path_factory.mktemp("limited"))
    tiny.make_inputs(workdir, train_rows=640)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["teacher"]["epochs"], config["train"]["eval_every"] = SIGNAL_TEACHER_EPOCHS, 1000
    (workdir / ".test" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    reference = workdir.parent / "reference"
    shutil.copytree(workdir, reference)
    started = time.monotonic()
    target = [f"{TEACHER}/metrics.json", "--configfile", ".test/config.yaml"]
    local = subprocess.Popen([str(BIN / "snakemake"), *target, "--cores", "1"], cwd=reference,
                             env=tiny.workflow_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the profile's slurm_extra, with the warning 10 s ahead of this short limit instead of 180 s
        done = _snakemake(cluster, workdir, *target, *FIRST_COMMAND, "--set-resources",
                          "finetune_teacher:runtime=20 if attempt > 1 else 1",
                          "finetune_teacher:slurm_extra='--signal=URG@10'", timeout=600)
        assert local.wait(timeout=300) == 0
    finally:
        local.kill()
    print(f"time-limited teacher on SLURM, warned, saved and resumed: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-5000:]
    return workdir, reference, done.stderr


def test_real_slurm_a_job_warned_before_its_time_limit_saves_and_its_retry_resumes(cluster, time_limited):
    workdir, reference, output = time_limited
    jobs = sorted(_jobs(cluster, workdir), key=lambda j: int(j["JobIDRaw"]))
    assert [j["rule"] for j in jobs] == ["finetune_teacher", "finetune_teacher"], jobs
    first, retry = jobs
    # the first attempt ran under its 1-minute limit, got the warning, saved and exited on its own (not TIMEOUT)
    assert _minutes(first["Timelimit"]) == 1 and first["State"] == "FAILED", first
    assert _minutes(retry["Timelimit"]) == 20 and retry["State"] == "COMPLETED", retry
    first_log = next((workdir / ".snakemake/slurm_logs").rglob(f"{first['JobIDRaw']}.log")).read_text()
    stopped = re.search(r"stopped by SIGURG after step (\d+)", first_log)
    assert stopped, first_log[-3000:]
    log = (workdir / "results/logs/teachers/task~rte/seed~42/finetune.log").read_text()  # the retry's
    assert f"resuming {TEACHER} from global step {stopped[1]}" in log, log[-2000:]
    assert int(stopped[1]) % 40  # mid-epoch: the step in progress, not the last evaluation (every 40 steps)
    resumed = json.loads((workdir / TEACHER / "metrics.json").read_text())
    uninterrupted = json.loads((reference / TEACHER / "metrics.json").read_text())
    for key in ("best", "last", "history"):
        assert resumed[key] == uninterrupted[key], key
