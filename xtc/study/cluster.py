"""Workflow-level guards the Snakefile calls: recovery from a killed ``snakemake`` and a SLURM pre-flight check.

* ``clear_stale_lock`` (at parse time, before Snakemake takes its lock): a ``snakemake`` killed with ``-9``
  leaves ``.snakemake/locks``; the next run would stop and ask for ``--unlock``. When no other live ``snakemake``
  process works in this directory (same host: ``/proc``), the locks are stale and are removed; otherwise they
  stay and the user is told which process holds them. Incomplete outputs are handled by ``rerun-incomplete``
  (profiles/default and the slurm profile): their jobs resume from the run directory's saved state.
* ``check_slurm_submission`` (onstart, before the first job is submitted): what the profile would pass as
  account and partition must be accepted by SLURM (``sbatch --test-only``), so a missing required value or a
  leftover placeholder stops the workflow with one line naming the key and the file.
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


# ---------------------------------------------------------------------------------------------- stale locks
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


def other_snakemakes(workdir: Path) -> list[int]:
    """PIDs of live ``snakemake`` processes (not this one or its parents) whose working directory is ``workdir``."""
    workdir, mine, found = Path(workdir).resolve(), _ancestors(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(proc.name)
            if pid in mine:
                continue
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            if _is_snakemake(argv) and Path(os.readlink(proc / "cwd")).resolve() == workdir:
                found.append(pid)
        except (OSError, ValueError):
            continue
    return found


def clear_stale_lock(workflow) -> None:
    """Remove ``.snakemake/locks`` a killed ``snakemake`` left, if no other ``snakemake`` works here."""
    locks = Path.cwd() / ".snakemake" / "locks"
    if not workflow.is_main_process or not locks.is_dir() or not any(locks.iterdir()):
        return
    if not Path("/proc/self/cwd").exists():
        return  # no /proc: cannot tell a live lock from a stale one; Snakemake's own message applies
    others = other_snakemakes(Path.cwd())
    if others:
        log.warning("another snakemake (PID %s) works in %s; wait for it to finish (this run stops at its lock)",
                    ", ".join(map(str, others)), Path.cwd())
        return
    shutil.rmtree(locks)
    log.warning("removed the stale lock of a snakemake that no longer runs in %s", Path.cwd())


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


def check_slurm_submission(workflow) -> None:
    """Stop before the first submission if SLURM would refuse this profile's account or partition."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm" or not workflow.is_main_process or shutil.which("sbatch") is None:
        return
    values = {key: _default_resource(workflow, key) for key in ENV}
    for key, value in values.items():
        if "CHANGE_ME" in value:
            raise WorkflowError(f"{PROFILE}: default-resources {key} is still the placeholder {value!r}; set your "
                                f"SLURM value there (or export {ENV[key]}), or delete the key to use SLURM's default")
    argv = ["sbatch", "--test-only", "--wrap", "true"]
    argv += ["-A", values["slurm_account"]] if values["slurm_account"] else []
    argv += ["-p", values["slurm_partition"]] if values["slurm_partition"] else []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return
    reason = (done.stderr.strip().splitlines() or ["sbatch --test-only failed"])[-1].replace("sbatch: error: ", "")
    key = "slurm_partition" if "partition" in reason.lower() else "slurm_account"
    given = f"{values[key]!r}" if values[key] else "not set"
    raise WorkflowError(f"{PROFILE}: SLURM refuses a job with {key} {given} ({reason}); set default-resources "
                        f"{key} in {PROFILE} or export {ENV[key]}")
