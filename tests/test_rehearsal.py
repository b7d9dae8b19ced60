"""Rehearsal mode (xtc.study.rehearsal): the real study's job graph on tiny local stand-ins, offline, in its own root.

The dry runs compare each paper study's rehearsal with its real dry run rule by rule; the end-to-end test
rehearses xtc-main (all 8 tasks, 177 jobs) on 2 cores and checks its tables, figures and report.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtc.glue import load_local
from xtc.study import grid as study_module
from xtc.study import rehearsal
from xtc.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STUDIES = ("xtc-main", "layer-reduction", "budget", "kd-variants", "lr", "all")
# the numbers (177 and 308 jobs), plus the serving report each study with packed students now writes
TOTALS = {"xtc-main": 177 + 1, "budget": 308 + 1}


def env() -> dict[str, str]:
    """The venv first on PATH, offline, no stray $GLUE_DIR (the rehearsal must not need any of it)."""
    out = {k: v for k, v in os.environ.items() if k != "GLUE_DIR" and not k.startswith("SLURM_")}
    out.update(PATH=os.pathsep.join([str(BIN), out.get("PATH", "")]), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return out


def snakemake(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def load_rehearsed_study(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / "studies" / f"{name}.yaml").read_text())


# ------------------------------------------------------------------------------------------------ the job graph
@pytest.mark.parametrize("study", STUDIES)
def test_rehearsal_dry_run_lists_the_real_jobs(study, tmp_path):
    configfile = f"config/studies/{study}.yaml"
    real = snakemake("-n", "--cores", "2", "--configfile", configfile)
    assert real.returncode == 0, real.stderr[-3000:]
    rehearsed = snakemake("-n", "--cores", "2", "--configfile", configfile, "--config", f"rehearsal={tmp_path}")
    assert rehearsed.returncode == 0, rehearsed.stderr[-3000:]
    real_counts, counts = job_counts(real.stdout + real.stderr), job_counts(rehearsed.stdout + rehearsed.stderr)
    assert counts == real_counts
    if study in TOTALS:
        assert sum(counts.values()) == TOTALS[study]
    # a dry run writes no stand-ins and nothing into the real results/
    assert not (tmp_path / "inputs").exists()


def test_a_bad_rehearsal_value_is_one_clear_line():
    with pytest.raises(ValueError, match=r"rehearsal = 3 is not allowed; use rehearsal=true"):
        rehearsal.root_of(3, REPO)
    assert rehearsal.root_of("false", REPO) is None and rehearsal.root_of(None, REPO) is None
    assert rehearsal.root_of(True, REPO) == REPO / "rehearsal"
    assert rehearsal.root_of("true", REPO) == REPO / "rehearsal"
    assert rehearsal.root_of("/tmp/x", REPO) == Path("/tmp/x")
    for value in (".", "./", "..", str(REPO), f"{REPO}/config/.."):  # the repository (or above it): refused
        with pytest.raises(ValueError, match=r"which holds the real study's results/, the rehearsal root; use "):
            rehearsal.root_of(value, REPO)
    assert rehearsal.root_of("rehearsal-mine", REPO) == REPO / "rehearsal-mine"


# ------------------------------------------------------------------------------------------------ what is swapped
def test_config_rewrite_is_torch_free():
    code = "import sys, xtc.study.rehearsal; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env()).returncode == 0


def _validated(name: str) -> dict:
    """The study as the workflow sees it (defaults filled), without Snakemake: the keys apply() touches."""
    study = study_module.with_shared(load_rehearsed_study(name), name)
    study.setdefault("augment", {}).setdefault("copies", None)
    study["augment"].setdefault("glove", None)
    study.setdefault("resources", {})
    study.setdefault("report", {}).setdefault("paper", [])
    return study


@pytest.mark.parametrize("name", ["xtc-main", "budget"])
def test_apply_swaps_models_data_and_budget_only(name, tmp_path):
    study = _validated(name)
    (out,) = rehearsal.apply([study], tmp_path / "root", base=REPO)
    inputs = (tmp_path / "root" / "inputs").resolve()
    assert out["teacher"]["finetuned"] == f"{inputs}/teachers/{{task}}"
    assert out["teacher"]["model"] == f"{inputs}/pretrained"
    assert out["augment"]["mlm"] == f"{inputs}/mlm" and out["augment"]["glove"] == f"{inputs}/glove.txt"
    assert out["augment"]["copies"] == 1
    assert out["data"]["glue_dir"] == f"{inputs}/glue"
    assert out["data"]["max_train_examples"] == rehearsal.TRAIN_ROWS
    assert out["resources"]["threads"] == 1 and out["resources"]["gpu"] == 0
    assert out["report"]["paper"] == [str(REPO / p) for p in study["report"]["paper"]]
    assert all(Path(p).is_file() for p in out["report"]["paper"])
    # untouched: the study's name, grid, exclusions, depth, step 1, training recipe, figures
    for key in ("study", "grid", "exclude", "step1", "quantize_from", "train"):
        assert out.get(key) == study.get(key), key
    assert out["teacher"]["layers"] == study["teacher"]["layers"] == 12
    assert out["report"]["figures"] == study["report"]["figures"]
    assert study["teacher"]["finetuned"].startswith("yoshitomo-matsubara/"), "apply must not edit its input"


def test_given_teachers_as_a_mapping_stay_a_mapping(tmp_path):
    study = _validated("xtc-main")
    study["teacher"]["finetuned"] = {"sst2": "someone/bert-sst2", "rte": "/models/rte"}
    (out,) = rehearsal.apply([study], tmp_path, base=REPO)
    assert sorted(out["teacher"]["finetuned"]) == ["rte", "sst2"]
    assert out["teacher"]["finetuned"]["rte"] == f"{tmp_path.resolve()}/inputs/teachers/rte"


def test_stand_ins_are_real_models_and_glue_files(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from xtc.glove import load_glove

    tasks = sorted(TASKS)
    base = rehearsal.make_inputs(tmp_path, tasks, layers=12)
    paths = rehearsal.stand_ins(tmp_path)
    assert AutoConfig.from_pretrained(paths["pretrained"]).num_hidden_layers == 12
    for task in tasks:
        spec = TASKS[task]
        teacher = AutoConfig.from_pretrained(paths["teachers"].format(task=task))
        assert (teacher.num_hidden_layers, teacher.num_labels) == (12, spec.num_labels)
        for split in spec.splits:
            examples = load_local(spec, paths["glue"], split)
            assert len(examples) == (rehearsal.TRAIN_ROWS if split == "train" else rehearsal.DEV_ROWS)
            assert all((e["text_b"] is not None) == spec.is_pair for e in examples)
    tokenizer = AutoTokenizer.from_pretrained(paths["mlm"])
    assert tokenizer.tokenize("dogs") == ["dog", "##s"]  # multi-piece words exist, so GloVe is consulted
    assert load_glove(paths["glove"]).neighbours("dogs", 3)
    stamp = (base / "stand-ins.json").stat().st_mtime_ns
    rehearsal.make_inputs(tmp_path, tasks, layers=12)  # present: not written again
    assert (base / "stand-ins.json").stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------------------ end to end
def test_xtc_main_rehearsal_end_to_end(tmp_path):
    """Every rule of xtc-main on the stand-ins: 178 jobs, tables with paper columns, both figures, the report."""
    root = tmp_path / "root"
    args = ("--cores", "2", "--configfile", "config/studies/xtc-main.yaml", "--config", f"rehearsal={root}")
    done = snakemake(*args, timeout=3600)  # ~6 min on an idle 2-core machine; generous for a loaded one
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "178 of 178 steps (100%) done" in done.stdout + done.stderr  # 177 jobs + the serving report
    with (root / "results" / "xtc-main" / "runs.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 8 + 8 * 8  # the given teachers, 6 quantized and 2 FP students per task
    assert {r["task"] for r in rows} == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
    with (root / "results" / "tables" / "xtc-main.csv").open() as handle:
        table = list(csv.DictReader(handle))
    paper_columns = [c for c in table[0] if c.startswith("paper_") and not any(
        derived in c for derived in ("glue_avg", "retention"))]  # the paper's cells, not averages or ratios of them
    printed = [float(r[c]) for r in table for c in paper_columns if r[c] not in ("", "nan")]
    with (REPO / "config" / "paper" / "xtc.csv").open() as handle:
        reported = {float(r["value"]) for r in csv.DictReader(handle)}
    assert printed and set(printed) <= reported  # the paper's own numbers, beside ours, for the cells it reports
    for kind in ("pareto", "heatmap"):
        for ext in ("png", "pdf"):
            assert (root / "figures" / f"xtc-main_{kind}.{ext}").stat().st_size > 0
    evaluated = list((root / "results" / "runs").rglob("packed_eval/metrics.json"))
    assert len(evaluated) == 48  # every packed student evaluated from its packed file, with its run's metrics
    for packed_eval in evaluated:
        packed = json.loads(packed_eval.read_text())
        run = json.loads((packed_eval.parent.parent / "metrics.json").read_text())
        assert set(packed["metrics"]) == set(run["best"]["metrics"]) != set(), packed_eval
        assert all(-1.0 <= v <= 1.0 for v in packed["metrics"].values()), packed["metrics"]
    serving = json.loads((root / "results" / "serving" / "xtc-main.json").read_text())
    assert len(serving["students"]) == 6  # W1A8 and W2A8 at 12, 6 and 5 layers, against the given teacher
    report = snakemake(*args, "--report", str(tmp_path / "report.html"), timeout=600)
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 0
    again = snakemake(*args, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
