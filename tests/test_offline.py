"""Offline compute nodes (xtc.study.prefetch): fetch once, then a whole workflow runs with no network at all.

The rehearsal's stand-ins play the hub (``$XTC_HUB_MIRROR``): a small study names its models by hub ids
(``standin/pretrained``, ``standin/mlm``) and its GloVe file by name, ``xtc prefetch`` fetches them into the
store, and the workflow then runs inside a network namespace with no network (``unshare -n``, root) and the hub
switched off (``--config offline=true``). A source the prefetch missed fails the run -- before the first job,
by the onstart check, which the test also shows by taking the masked LM out of the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tinystudy import tiny

from xtc.study import plan, rehearsal

pytestmark = pytest.mark.skipif(subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode != 0,
                                reason="needs `unshare -n` (root, util-linux) to run the workflow without network")


def study(glue: Path) -> dict:
    return {"study": "offline", "description": "offline rehearsal: hub ids served by a prefetched store",
            "teacher": {"model": "standin/pretrained", "layers": 4, "epochs": 1, "lr": 1.0e-3},
            "data": {"glue_dir": str(glue), "max_seq_length": rehearsal.MAX_SEQ_LENGTH, "batch_size": 8,
                     "max_train_examples": rehearsal.TRAIN_ROWS},
            "augment": {"mlm": "standin/mlm", "glove": "glove.txt", "copies": 1},
            "grid": {"task": ["rte"], "layers": [4, 2], "wbits": [1], "abits": [8], "epochs": [1], "lr": [1.0e-3],
                     "da": [1]},
            "step1": {"epochs": 1, "lr": 1.0e-3},
            "revisions": {"standin/mlm": "v1"},
            "resources": {"gpu": 0, "threads": 1, "mem_mb": 1000, "mem_mb_small": 1000},
            "report": {"figures": ["pareto"]}}


def run(*argv: str, cwd: Path, env: dict, offline: bool = False) -> subprocess.CompletedProcess:
    argv = ("unshare", "-n", *argv) if offline else argv
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_prefetch_then_the_workflow_runs_in_a_network_namespace(tmp_path, monkeypatch):
    workdir = tiny.copy_workflow(tmp_path / "work")
    # the stand-ins, laid out as the hub would serve them
    base = rehearsal.make_inputs(tmp_path / "standins", ["rte"], layers=4)
    paths, mirror = rehearsal.stand_ins(tmp_path / "standins"), tmp_path / "hub"
    shutil.copytree(paths["pretrained"], mirror / "standin" / "pretrained")
    shutil.copytree(paths["mlm"], mirror / "standin" / "mlm")
    (mirror / "glove").mkdir()
    shutil.copy2(paths["glove"], mirror / "glove" / "glove.txt")
    (workdir / "offline.yaml").write_text(yaml.safe_dump(study(base / "glue"), sort_keys=False))
    env = {**tiny.workflow_env(), "XTC_HUB_MIRROR": str(mirror)}
    env.pop("XTC_STORE", None)

    fetched = run("xtc", "prefetch", "--configfile", "offline.yaml", cwd=workdir, env=env)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert "[1/3] standin/pretrained @ main" in fetched.stdout and "complete" in fetched.stdout.splitlines()[-1]
    store = workdir / "prefetched"
    record = json.loads((store / "prefetch.json").read_text())
    assert set(record) == {"standin/pretrained", "standin/mlm", "GloVe glove.txt"}
    assert record["standin/mlm"]["revision"] == "v1" and record["standin/mlm"]["bytes"] > 0

    env.pop("XTC_HUB_MIRROR")
    args = ("snakemake", "--cores", "2", "--configfile", "offline.yaml", "--config", "offline=true")
    # a source the prefetch did not bring: the run stops before its first job
    shutil.move(store / "models" / "standin" / "mlm", tmp_path / "mlm-aside")
    stopped = run(*args, cwd=workdir, env=env, offline=True)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "augment.mlm = 'standin/mlm'" in out and "xtc prefetch" in out, out[-3000:]
    assert not (workdir / "results" / "teachers").exists()
    shutil.move(tmp_path / "mlm-aside", store / "models" / "standin" / "mlm")

    done = run(*args, cwd=workdir, env=env, offline=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    runs = sorted((workdir / "results" / "runs").rglob("metrics.json"))
    assert len(runs) == 3 + 2  # FP 2L step 1, W1A8 at 4 and 2 layers; 2 packed evaluations
    manifest = json.loads(next((workdir / "results" / "teachers").rglob("manifest.json")).read_text())
    assert manifest["prefetched"]["standin/mlm"] == {"revision": "v1", "commit": "v1"}
    augmented = (workdir / "results" / "data" / "task~rte" / "train_aug.tsv").read_text()
    assert len(augmented.splitlines()) == 1 + 2 * rehearsal.TRAIN_ROWS  # header, each example and one copy

    # the plan's disk figure of every run directory is what the rehearsal's run directories hold
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("XTC_STORE", str(store))  # the plan reads the stand-in teacher's shape from the store
    planned = plan.load("offline.yaml").summary()["run_dir_bytes"]
    assert "results/teachers/task~rte/seed~42" in planned and len(planned) == 1 + 3
    for name, size in planned.items():
        folder = workdir / name
        held = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".owner"
                   and "packed_eval" not in p.parts)
        assert size == pytest.approx(held, rel=0.005), name
