"""`dvc repro` around Snakemake, in a temporary git repository holding the tiny study as config/studies/tiny.yaml,
chosen by name (params.yaml: `study: tiny`): the first repro trains, a second does nothing, one more grid value
(augmentation on) trains only the new run (persist: true keeps the checkpoints), a changed paper value rebuilds the
table and nothing else, and `dvc metrics show` prints the scores."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tinystudy import BIN, REPO, tiny

RUN = "results/runs/task~rte/layers~4/wbits~1/abits~8/kd~one_stage/epochs~1/lr~0.001/da~{da}/seed~42"
STUDY = "config/studies/tiny.yaml"
# the paper's number for the tiny study's W1A8 4-layer student (made up: the tiny study's numbers mean nothing)
PAPER = ("model,method,task,metric,value,weight_bits,embedding_bits,act_bits,layers,teacher_layer,kd,da,size_mb,"
         "size_source,source,note\nW1A8 4L,XTC,rte,accuracy,{value},1,1,8,4,,one_stage,0,,,made up for the test,\n")


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout + done.stderr


GIT = ["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
# What the README tells reviewers to run after `dvc pull`: a fresh clone has no .snakemake metadata and pulled
# files get new modification times, so `mtime` is left out of the triggers (as dvc.yaml's stages do).
TRIGGERS = ["--rerun-triggers", "params", "input", "code", "software-env"]


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git repository holding the tiny study as config/studies/tiny.yaml (with a paper CSV) and `study: tiny` in
    params.yaml, after its first `dvc repro`."""
    tmp_path = tmp_path_factory.mktemp("dvc")
    repo = tiny.copy_workflow(tmp_path / "repo", extra=(".gitignore", "params.yaml"))
    shutil.copytree(REPO / "xtc", repo / "xtc", ignore=shutil.ignore_patterns("__pycache__"))  # a stage dep
    (repo / "figures").mkdir(exist_ok=True)
    tiny.make_inputs(repo)
    config = yaml.safe_load(tiny.tiny_config(repo, layers=[4]).read_text())
    config["report"]["paper"] = ["config/paper/tiny.csv"]
    (repo / STUDY).write_text(yaml.safe_dump(config, sort_keys=False))
    (repo / "config/paper/tiny.csv").write_text(PAPER.format(value=50.0))
    (repo / "params.yaml").write_text("study: tiny\n")
    env = tiny.workflow_env()
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    _run([*GIT, "add", "-A"], repo, env)
    _run([*GIT, "commit", "-qm", "tiny study"], repo, env)
    _run([str(BIN / "dvc"), "repro"], repo, env)
    return repo, env


def _tracked_texts(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for d in ("results/tables", "results/scores", "results/tiny")
            for p in sorted((root / d).rglob("*")) if p.is_file()}


def test_dvc_round_trip_push_fresh_clone_pull_nothing_to_do(dvc_repo, tmp_path):
    """The reviewer's path: results pushed to a DVC remote; a fresh clone pulls them and nothing retrains."""
    repo, env = dvc_repo
    dvc = str(BIN / "dvc")
    _run([dvc, "remote", "add", "-d", "store", str(tmp_path / "remote")], repo, env)
    _run([dvc, "push"], repo, env)
    _run([*GIT, "add", "-A"], repo, env)
    _run([*GIT, "commit", "-qm", "results: dvc.lock, tables, scores"], repo, env)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "results" / "runs").exists() and not (clone / ".snakemake").exists()
    assert (clone / "results/tiny/runs.tsv").is_file()  # git-tracked with the tables it feeds (.gitignore)
    _run([dvc, "pull"], clone, env)
    teacher = "results/teachers/task~rte/seed~42/metrics.json"
    assert (clone / teacher).read_text() == (repo / teacher).read_text()
    assert "Data and pipelines are up to date" in _run([dvc, "repro"], clone, env)  # hashes: nothing changed
    # Pulled files get checkout-order modification times, and Snakemake 9 compares modification times whatever
    # --rerun-triggers says; --touch marks the pulled outputs current, in the workflow's order.
    _run([str(BIN / "snakemake"), "--touch", "--cores", "1", "--configfile", STUDY], clone, env)
    dry = _run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", STUDY, *TRIGGERS], clone, env)
    # nothing retrains, re-evaluates or re-tabulates: the runs table (results/<study>/runs.tsv) is git-tracked
    assert "Nothing to be done (all requested files are present and up to date)." in dry, dry[-3000:]
    assert "Job stats:" not in dry
    assert _tracked_texts(clone) == _tracked_texts(repo) and _tracked_texts(clone)
    assert _run(["git", "status", "--porcelain"], clone, env).strip() == ""  # nothing rewritten


def test_dvc_repro_trains_once_then_only_new_runs(dvc_repo):
    repo, env = dvc_repo
    first = repo / RUN.format(da=0) / "metrics.json"
    teacher = repo / "results/teachers/task~rte/seed~42/metrics.json"
    assert first.is_file() and teacher.is_file() and (repo / "results/tables/tiny.md").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (first, teacher)}

    again = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "Data and pipelines are up to date" in again

    config = yaml.safe_load((repo / STUDY).read_text())
    config["grid"]["da"] = [0, 1]  # one more grid value: the same run on augmented data
    (repo / STUDY).write_text(yaml.safe_dump(config, sort_keys=False))
    grown = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert (repo / RUN.format(da=1) / "metrics.json").is_file()
    assert (repo / "results/data/task~rte/train_aug.tsv").is_file()
    assert {p: p.stat().st_mtime_ns for p in (first, teacher)} == stamps  # nothing retrained
    assert "finetune_teacher" not in grown and grown.count("rule distill:") == 1 and "rule augment:" in grown

    metrics = _run([str(BIN / "dvc"), "metrics", "show"], repo, env)
    assert "results/scores/tiny.json" in metrics
    assert "rte/L4/W1A8/one_stage/e1/lr0.001/da1/s42.accuracy" in metrics and "rte/teacher.accuracy" in metrics
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"] == {"study": "tiny"}


def test_dvc_repro_rebuilds_the_table_when_a_paper_value_changes(dvc_repo):
    """The paper CSVs and xtc/report are what a table is computed from besides the runs: a changed paper value
    reruns the report stage, and Snakemake rebuilds that table (nothing retrains)."""
    repo, env = dvc_repo
    table = repo / "results/tables/tiny.md"
    run = repo / RUN.format(da=0) / "metrics.json"
    before, stamp = table.read_text(), run.stat().st_mtime_ns
    assert "50.0" in before
    (repo / "config/paper/tiny.csv").write_text(PAPER.format(value=61.5))
    again = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "rule aggregate_tiny:" in again and "rule distill:" not in again
    after = table.read_text()
    assert after != before and "61.5" in after and "50.0" not in after
    assert run.stat().st_mtime_ns == stamp
