"""Workflow-level guards for SLURM runs, called by the Snakefile (the stale-lock check: ``xtc.study.driverlock``).

* ``require_named_study`` (onstart): under the SLURM executor the default study (``config/config.yaml``, the CPU
  demo) is never run by accident; the command must name a study file.
* ``partition`` (a resource of the rules): CPU-only jobs go to ``$XTC_CPU_PARTITION`` when it is set, GPU jobs to
  the profile's partition (``$SBATCH_PARTITION``, or SLURM's default).
* ``check_slurm_submission`` (onstart, before the first job is submitted): SLURM must accept the largest request
  of each partition the study uses -- account, partition, ``--gpus``, ``--time`` and ``--mem`` of its largest job
  (``sbatch --test-only``), and no job may ask for more time than the partition's ``MaxTime`` (``sinfo``;
  clusters that do not enforce partition limits at submission accept such a job and leave it pending forever).
  A refusal stops the workflow with one line naming the value and the fix.
* ``report_failures`` (onerror): with ``keep-going`` the failed jobs are listed at the end, with their logs.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
from pathlib import Path

from snakemake.exceptions import WorkflowError

log = logging.getLogger("snakemake.xtc")
PROFILE = "slurm/config.v8+.yaml"
ENV = {"slurm_account": "SBATCH_ACCOUNT", "slurm_partition": "SBATCH_PARTITION"}
CPU_PARTITION_ENV = "XTC_CPU_PARTITION"
DEFAULT_STUDY = "config/config.yaml"



def job_wildcards(job) -> str:
    """A job's wildcards as ``task=rte, layers=4, ...``; empty ones (the base recipe's path prefix) left out."""
    return ", ".join(f"{k}={v}" for k, v in job.wildcards.items() if v != "")

def _is_slurm(workflow) -> bool:
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name == "slurm" and workflow.is_main_process


# ---------------------------------------------------------------------------------------------- the study
def study_names(root: Path | str = ".") -> list[str]:
    return sorted(p.stem for p in (Path(root) / "config" / "studies").glob("*.yaml"))


def require_named_study(workflow, named: bool) -> None:
    """Under SLURM, stop before any submission when no ``--configfile`` names the study (the default is the demo)."""
    if named or not _is_slurm(workflow):
        return
    names = "|".join(study_names(workflow.basedir))
    raise WorkflowError(f"no study named: without --configfile this is the CPU demo ({DEFAULT_STUDY}), not for a "
                        f"cluster; add --configfile config/studies/{{{names}}}.yaml (or: make study STUDY=xtc-main "
                        f"PROFILE=slurm; the demo on SLURM anyway: --configfile {DEFAULT_STUDY})")


# ---------------------------------------------------------------------------------------------- partitions
def partitions(workflow, gpu: int) -> dict[str, str]:
    """The ``slurm_partition`` of the rules: ``"gpu"`` for those that ask for the study's ``resources.gpu`` GPUs,
    ``"cpu"`` for the CPU-only ones (exports, packed evaluations, serving reports)."""
    return {"gpu": partition(workflow, gpu), "cpu": partition(workflow, 0)}


def partition(workflow, gpu: int) -> str:
    """The ``slurm_partition`` of a job asking for ``gpu`` GPUs: a CPU-only job goes to ``$XTC_CPU_PARTITION``
    when it is set; otherwise (and GPU jobs always) where the profile sends every job (its ``slurm_partition``:
    ``$SBATCH_PARTITION``, or empty for SLURM's default)."""
    cpu = os.environ.get(CPU_PARTITION_ENV, "")
    return cpu if cpu and not gpu else _default_resource(workflow, "slurm_partition")


def check_lock_scope(workflow, root: str = "results") -> None:
    """Under SLURM, say where the run locks (``xtc.study.runlock``) hold on one node only (a mount option)."""
    if not _is_slurm(workflow):
        return
    from xtc.study.runlock import lock_scope

    reason = lock_scope(Path(root) if Path(root).exists() else Path.cwd())
    if reason:
        log.warning("run locks are node-local here (%s): a job cannot see a trainer left running on another node "
                    "by a killed workflow; scancel a killed workflow's jobs before running it again "
                    "(docs/cluster.md, \"Locks\")", reason)


def report_failures(workflow, logfiles: str | list[str] | None = None) -> None:
    """List the jobs that failed for good (after their retries), each with its log, on stderr and at the end of
    Snakemake's log file (``onerror``'s ``log``); a rerun of the same command retries them."""
    scheduler = getattr(workflow, "scheduler", None)
    failed = sorted(getattr(scheduler, "failed", ()) or (), key=lambda job: (job.rule.name, str(job.wildcards)))
    if not failed:
        return
    lines = [f"{len(failed)} job(s) failed; the others ran on (keep-going). Run the same command again to retry them:"]
    for job in failed:
        wildcards = job_wildcards(job)
        lines.append(f"  failed: rule {job.rule.name} ({wildcards or 'no wildcards'}): "
                     f"{', '.join(map(str, job.log)) or 'no log'}")
    for line in lines:
        log.error("%s", line)
    for logfile in [logfiles] if isinstance(logfiles, str) else logfiles or []:
        with open(logfile, "a") as handle:
            handle.write("".join(f"{line}\n" for line in lines))


# ---------------------------------------------------------------------------------------------- SLURM pre-flight
def _environ_lookup(node: ast.expr) -> tuple[str, str] | None:
    """``(VAR, default)`` of ``os.environ.get('VAR', 'default')`` or ``os.environ['VAR']`` (``os`` may be spelled
    ``__import__('os')``), else None."""
    def is_environ(n: ast.expr) -> bool:
        if not (isinstance(n, ast.Attribute) and n.attr == "environ"):
            return False
        owner = n.value
        return (isinstance(owner, ast.Name) and owner.id == "os") or (
            isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "__import__"
            and [_text(a) for a in owner.args] == ["os"] and not owner.keywords)

    if isinstance(node, ast.Subscript) and is_environ(node.value) and _text(node.slice) is not None:
        return _text(node.slice), ""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and is_environ(node.func.value) and not node.keywords and 1 <= len(node.args) <= 2
            and all(_text(a) is not None for a in node.args)):
        return _text(node.args[0]), (_text(node.args[1]) if len(node.args) == 2 else "")
    return None


def _text(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def resource_value(key: str, expr: str) -> str:
    """What a profile's default-resources expression gives, read without evaluating it (environment variables
    expanded first, as Snakemake does): a literal (``'myaccount'``), an environment lookup
    (``__import__('os').environ.get('SBATCH_ACCOUNT', '')``) or a bare word; any other call is refused."""
    expr = os.path.expanduser(os.path.expandvars(expr)).strip()
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return expr  # a bare value Snakemake reads as text
    if isinstance(node, ast.Constant):
        return "" if node.value is None else str(node.value)
    lookup = _environ_lookup(node)
    if lookup is None and not any(isinstance(n, ast.Call) for n in ast.walk(node)):
        return expr  # a bare word (myaccount, my-account, gpu,cpu): Snakemake reads it as text
    if lookup is None:
        raise WorkflowError(f"{PROFILE}: default-resources {key} = {expr!r} is an expression xtc does not evaluate; "
                            f"write a quoted value ({key}: \"'myvalue'\") or "
                            f"__import__('os').environ.get('{ENV.get(key, 'VAR')}', '')")
    name, default = lookup
    return os.environ.get(name, default)


def _default_resource(workflow, key: str) -> str:
    """The value the profile's (or --default-resources') expression for ``key`` gives (``resource_value``)."""
    args = getattr(workflow.resource_settings.default_resources, "args", None) or []
    for arg in args:
        name, _, expr = arg.partition("=")
        if name.strip() == key:
            return resource_value(key, expr)
    return ""


def _minutes(limit: str) -> float:
    """A SLURM time limit (``sinfo %l``: ``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``), in
    minutes."""
    if limit.strip().lower() in ("infinite", "unlimited", "n/a", ""):
        return float("inf")
    days, _, clock = limit.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if days:
        h, m, sec = (parts + [0, 0])[:3]
    else:
        h, m, sec = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + sec / 60


def partition_time_limits() -> dict[str, float]:
    """Partition -> MaxTime in minutes, from ``sinfo``; the default partition also under ``""``."""
    done = subprocess.run(["sinfo", "-h", "-o", "%P %l"], capture_output=True, text=True, timeout=60)
    limits: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if len(line.split()) == 2:
            name, limit = line.split()
            limits[name.rstrip("*")] = _minutes(limit)
            if name.endswith("*"):
                limits[""] = limits[name.rstrip("*")]
    return limits


def largest_requests(jobs, default_partition: str) -> dict[str, dict[str, tuple[int, str]]]:
    """Per partition, the largest ``runtime`` (minutes), ``mem_mb`` and ``gpu`` any of ``jobs`` asks for, each
    with the job that asks (``rule (wildcards)``). Local jobs never reach SLURM and are left out."""
    largest: dict[str, dict[str, tuple[int, str]]] = {}
    for job in sorted(jobs, key=lambda job: (job.rule.name, sorted(job.wildcards.items()))):  # ties: first by name
        if job.is_local:
            continue
        where = str(job.resources.get("slurm_partition") or default_partition)
        name = f"{job.rule.name} ({job_wildcards(job) or 'no wildcards'})"
        mine = largest.setdefault(where, {})
        for key in ("runtime", "mem_mb", "gpu"):
            value = int(job.resources.get(key) or 0)
            if value > mine.get(key, (-1, ""))[0]:
                mine[key] = (value, name)
                if key == "runtime":  # whether the longest job is a GPU job (which variable moves it)
                    mine["runtime_gpu"] = (int(job.resources.get("gpu") or 0), name)
    return largest


def check_slurm_submission(workflow) -> None:
    """Stop before the first submission if SLURM would refuse the account, a partition or a job's request."""
    if not _is_slurm(workflow) or shutil.which("sbatch") is None:
        return
    values = {key: _default_resource(workflow, key) for key in ENV}
    for key, value in values.items():
        if "CHANGE_ME" in value:
            raise WorkflowError(f"{PROFILE}: default-resources {key} is still the placeholder {value!r}; set your "
                                f"SLURM value there (or export {ENV[key]}), or delete the key to use SLURM's default")
    requests = largest_requests(workflow.dag.needrun_jobs(), values["slurm_partition"]) or {
        values["slurm_partition"]: {}}
    limits = partition_time_limits() if shutil.which("sinfo") else {}
    for where, largest in requests.items():
        _test_submission(values["slurm_account"], where, largest, values)
        runtime, job = largest.get("runtime", (0, ""))
        limit = limits.get(where)
        if limit is not None and runtime > limit:
            env = CPU_PARTITION_ENV if not largest.get("runtime_gpu", (0,))[0] else ENV["slurm_partition"]
            shown = where or "(the default)"
            raise WorkflowError(
                f"{job} asks for {runtime} min, more than partition {shown}'s MaxTime of {limit:g} min; choose a "
                f"partition whose MaxTime covers it (export {env}=...), or cap the rule's request, e.g. "
                f"--set-resources {job.split()[0]}:runtime={int(limit)} (the job then stops at the limit, saved, and "
                "its retries resume it)")


def _test_submission(account: str, where: str, largest: dict[str, tuple[int, str]], values: dict[str, str]) -> None:
    """``sbatch --test-only`` with the account, the partition and the largest time, memory and GPUs asked there."""
    argv = ["sbatch", "--test-only", "--wrap", "true"]
    argv += ["-A", account] if account else []
    argv += ["-p", where] if where else []
    asked = []
    if largest.get("runtime", (0,))[0]:
        asked += [f"--time={largest['runtime'][0]}"]
    if largest.get("mem_mb", (0,))[0]:
        asked += [f"--mem={largest['mem_mb'][0]}"]
    if largest.get("gpu", (0,))[0]:
        asked += [f"--gpus={largest['gpu'][0]}"]
    done = subprocess.run(argv + asked, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return
    reason = (done.stderr.strip().splitlines() or ["sbatch --test-only failed"])[-1].replace("sbatch: error: ", "")
    if asked and subprocess.run(argv, capture_output=True, text=True, timeout=60).returncode == 0:
        jobs = sorted({job for _, job in largest.values()})
        raise WorkflowError(f"SLURM refuses the largest request of partition {where or '(the default)'} "
                            f"({' '.join(asked)}; asked by {'; '.join(jobs)}): {reason}; lower that resource "
                            "(--set-resources RULE:KEY=VALUE) or choose a partition that grants it "
                            f"(export {ENV['slurm_partition']}/{CPU_PARTITION_ENV})")
    key = "slurm_partition" if "partition" in reason.lower() else "slurm_account"
    given = f"{values[key]!r}" if values[key] else "not set"
    if key == "slurm_partition" and where and where != values[key]:
        raise WorkflowError(f"SLURM refuses partition {where!r} ({reason}); set {CPU_PARTITION_ENV} to a "
                            "partition of this cluster (sinfo lists them) or unset it")
    raise WorkflowError(f"{PROFILE}: SLURM refuses a job with {key} {given} ({reason}); set default-resources "
                        f"{key} in {PROFILE} or export {ENV[key]}")
