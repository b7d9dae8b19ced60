"""Workflow and command-line start-up: ``snakemake -n`` over the paper studies, ``xtc --help``, ``xtc distill``.

* Dry run: ``snakemake -n --nolock --cores 8 --configfile config/studies/all.yaml`` in the repository (as
  ``tests/test_workflow.py`` runs it; ``--nolock`` so it never holds a lock a real run might need): wall seconds and
  the job count of snakemake's own ``Job stats`` table (its ``total`` row), checked against the jobs it lists.
* ``xtc --help``: wall seconds of the console script next to this interpreter, median of several runs.
* ``xtc distill`` start-up: process launch to the start of its first training step, read from the ``started_at``
  stamp of the first record of ``train_log.jsonl`` (``xtc.train``), for a W1A8 1-stage KD run on a tiny local
  teacher and tiny GLUE-format RTE files (built with ``tests/textdata.py``, nothing downloaded); the run is stopped
  once its first step is logged. Also its CPU seconds at that moment (``/proc/PID/stat``: start-up plus one tiny
  step), which a busy machine inflates much less than wall time. Target: under 3 s each.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALL_STUDIES = "config/studies/all.yaml"


def _env() -> dict[str, str]:
    """Offline, one thread per process (as workflow jobs), this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "GLUE_DIR"}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


def _xtc() -> list[str]:
    script = Path(sys.executable).parent / "xtc"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "xtc"]


# ---------------------------------------------------------------------------------------------- snakemake -n
def job_total(output: str) -> int:
    """The ``total`` row of the last ``Job stats`` table of a snakemake (dry) run."""
    table = output.rsplit("Job stats:", 1)[1]
    return int(re.search(r"^total\s+(\d+)$", table, re.MULTILINE)[1])


def listed_jobs(output: str) -> int:
    """The jobs a dry run lists, one ``rule NAME:`` / ``localrule NAME:`` block each."""
    return len(re.findall(r"^(?:local)?rule \w+:$", output, re.MULTILINE))


def dry_run(configfile: str | None = ALL_STUDIES) -> tuple[float, str]:
    """Seconds and combined output of ``snakemake -n`` in the repository (the default study when None)."""
    args = ["-n", "--nolock", "--cores", "8"] + (["--configfile", configfile] if configfile else [])
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "snakemake"), *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------- start-up
def help_seconds(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([*_xtc(), "--help"], env=_env(), capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_inputs(root: Path) -> dict[str, Path]:
    """RTE TSVs (32 train, 16 dev) and a 4-layer random teacher with its tokenizer, as the tests build them."""
    spec = importlib.util.spec_from_file_location("textdata", REPO / "tests" / "textdata.py")
    textdata = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(textdata)
    from xtc.models import random_model, tiny_bert_config

    for split, n in (("train", 32), ("validation", 16)):
        textdata.write_glue_tsv(root / "glue", "rte", split, n, seed=3)
    tokenizer = textdata.tiny_tokenizer(root / "tok")
    random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    return {"glue": root / "glue", "teacher": root / "teacher"}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def distill_startup(inputs: dict[str, Path], out: Path, timeout: float = 120) -> tuple[float, float | None]:
    """Wall seconds from launching ``xtc distill`` to the ``started_at`` of its first training step, and the CPU
    seconds the process had used when that step was logged (start-up plus one tiny step); the run is stopped."""
    command = [*_xtc(), "distill", "--teacher", str(inputs["teacher"]), "--task", "rte", "--data-dir",
               str(inputs["glue"]), "--weight-bits", "1", "--act-bits", "8", "--epochs", "1", "--batch-size", "8",
               "--max-seq-length", "32", "--out", str(out)]
    log = out / "train_log.jsonl"
    with tempfile.TemporaryFile() as stderr:
        launched = time.time()
        proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while not (log.is_file() and log.read_text().endswith("\n")):
                if proc.poll() is not None and not log.is_file():
                    stderr.seek(0)
                    raise RuntimeError(f"xtc distill exited ({proc.returncode}) before its first step:\n"
                                       f"{stderr.read().decode()[-3000:]}")
                if time.time() - launched > timeout:
                    raise RuntimeError(f"xtc distill logged no training step within {timeout} s")
                time.sleep(0.01)
            cpu = _cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
    return json.loads(log.read_text().splitlines()[0])["started_at"] - launched, cpu


def run(quick: bool = False, configfile: str | None = ALL_STUDIES, distill_rounds: int | None = None) -> dict:
    seconds, output = dry_run(configfile)
    jobs, listed = job_total(output), listed_jobs(output)
    if jobs != listed:
        raise RuntimeError(f"snakemake's Job stats total ({jobs}) differs from the {listed} jobs it listed")
    distill_rounds = distill_rounds or (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="xtc-bench-") as tmp:
        inputs = tiny_inputs(Path(tmp))
        wall, cpu = zip(*(distill_startup(inputs, Path(tmp) / f"run{i}") for i in range(distill_rounds)), strict=True)
    return {
        "what": "snakemake dry run of the paper studies; start-up of xtc --help and of xtc distill to its first step",
        "method": "wall seconds of subprocesses; xtc distill: launch to the first train record's started_at "
                  "(tiny local teacher and RTE files, W1A8 1-stage KD, OMP_NUM_THREADS=1); medians",
        "dry_run": {"configfile": configfile or "config/config.yaml", "jobs": jobs, "seconds": round(seconds, 2)},
        "xtc_help_s": round(help_seconds(3 if quick else 10), 3),
        "xtc_distill_first_step_s": round(statistics.median(wall), 3),
        "xtc_distill_cpu_s_at_first_step": None if None in cpu else round(statistics.median(cpu), 3),
        "xtc_distill_rounds": distill_rounds, "target_startup_s": 3.0,
    }
