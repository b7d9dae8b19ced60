"""xtc.study.cost and xtc.study.plan: the runtime model, the calibration lookup, the plan's graph and its disk formula.

The plan's job counts are checked against the dry-run counts test_workflow.py pins for every paper study (the
same numbers a real `snakemake -n` prints); the disk formula against run directories that `xtc` really wrote.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from test_workflow import ALL, BUDGET, KD_VARIANTS, LAYER_REDUCTION, LR, XTC_MAIN

from xtc.study import cost, plan
from xtc.study import grid as study

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _at_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("GLUE_DIR", raising=False)


def settings_of(raw: dict) -> dict:
    return study.load_studies(raw, "s.yaml", validate=validate)[0]


def tiny(**resources) -> dict:
    return settings_of({"study": "t", "teacher": {"model": "no/such-local-model", "layers": 12},
                        "grid": {"task": ["rte"], "layers": [12, 6], "wbits": [1], "epochs": [3]},
                        "data": {"batch_size": 32, "max_seq_length": 128},
                        "train": {"eval_every": 100}, "resources": {"gpu": 1, **resources}})


def test_the_runtime_model_counts_training_evaluations_and_start_up(tmp_path):
    """No calibration: the documented default FLOP rate, written out by hand for a 6-layer W1A8 RTE student."""
    s = tiny()
    costs = cost.JobCosts(s, "cuda", calibration=tmp_path / "none.json")
    assert costs.rates.note == cost.DEFAULT_NOTE
    shape = cost.Shape()
    h, i, seq = 768, 3072, 128
    per_layer = seq * (2 * (4 * h * h + 2 * h * i) + 4 * seq * h)
    assert cost.forward_flops(shape, 6, seq) == 6 * per_layer
    train = 3 * 6 * per_layer + 12 * per_layer  # student forward+backward, teacher forward
    steps = math.ceil(2490 / 32) * 3  # RTE: 2,490 examples, 3 epochs
    evals = steps // 100 + 3  # every 100 steps plus each epoch end
    expected = (cost.START_S + (2490 + 277) / cost.TOKENIZE_PER_S + 2490 * 3 / (10e12 / train / cost.QUANT_OVERHEAD)
                + evals * 277 / (10e12 / (6 * per_layer)))
    job = costs.train("rte", 6, "1", 3, 0, teacher=False)
    assert (job["steps"], job["evals"]) == (234, 5) and job["seconds"] == pytest.approx(expected, rel=1e-12)
    assert costs.minutes(job["seconds"]) == 15 + math.ceil(1.5 * expected / 60)
    # QQP at 12 layers, 18 epochs: ~220 evaluations of 40k pairs are part of the estimate
    qqp = settings_of({**yaml.safe_load(Path("config/studies/xtc-main.yaml").read_text())})
    job = cost.JobCosts(qqp, "cuda", calibration=tmp_path / "none.json").train("qqp", 12, "1", 18, 0, False)
    assert job["evals"] == math.ceil(363846 / 32) * 18 // 1000 + 18 == 222


def test_a_calibration_replaces_the_default_and_other_kinds_scale_by_flops(tmp_path):
    s, shape = tiny(), cost.Shape()
    seq = 128
    flops6 = cost.train_flops(shape, 6, seq, 12)
    entry = {"shape": shape.key(), "batch_size": 32, "seq_length": seq, "threads": 4, "tf32": False,
             "measured": "2026-12-07", "kinds": {"distill:6:1": {"samples_per_s": 500.0, "flops_per_sample": flops6,
                                                                 "peak_memory_bytes": 5 * 2**30}}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"version": 1, "devices": {"NVIDIA H100 80GB HBM3": [entry]}}))
    costs = cost.JobCosts(s, "cuda", calibration=path)
    assert costs.rates.note.startswith("calibrated on NVIDIA H100 80GB HBM3")
    assert costs.rates.samples_per_s("distill:6:1", flops6, seq) == 500.0
    flops12 = cost.train_flops(shape, 12, seq, 12)  # not timed: the same effective FLOP/s
    assert costs.rates.samples_per_s("distill:12:1", flops12, seq) == pytest.approx(500.0 * flops6 / flops12)
    assert costs.train("rte", 6, "1", 3, 0, False)["memory"] == 5 * 2**30  # measured, not estimated
    assert cost.JobCosts(s, "cpu", calibration=path).rates.note == cost.DEFAULT_NOTE  # no CPU entry


def test_a_calibrated_start_up_replaces_the_fixed_estimate_in_every_job(tmp_path):
    s, shape, seq = tiny(gpu=0, threads=1), cost.Shape(), 128
    kinds = {"eval:6:fp": {"samples_per_s": 40.0, "flops_per_sample": cost.forward_flops(shape, 6, seq)},
             "distill:6:1": {"samples_per_s": 10.0, "flops_per_sample": cost.train_flops(shape, 6, seq, 12)}}
    entry = {"shape": shape.key(), "batch_size": 32, "seq_length": seq, "threads": 1, "tf32": False,
             "measured": "2026-12-07", "kinds": kinds}
    costs = {}
    for name, startup in (("fixed", None), ("timed", {"imports_s": 3.0, "load_s": 1.5, "export_s": 2.0})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"version": 1, "devices": {"cpu: Some CPU x1": [
            {**entry, **({"startup": startup} if startup else {})}]}}))
        costs[name] = cost.JobCosts(s, "cpu", calibration=path)
    fixed, timed = costs["fixed"], costs["timed"]
    train = [c.train("rte", 6, "1", 3, 0, teacher=False)["seconds"] for c in (fixed, timed)]
    assert train[0] - train[1] == pytest.approx(cost.START_S - (3.0 + 2 * 1.5))  # the teacher and the student
    assert fixed.export() == cost.SMALL_JOB_S["export"] and timed.export() == 3.0 + 1.5 + 2.0
    evals = [c.evaluate("rte", 6, packed=True) for c in (fixed, timed)]
    assert evals[0] - evals[1] == pytest.approx(cost.START_S - (3.0 + 1.5))
    assert fixed.serving_report([(6, True)]) == cost.SMALL_JOB_S["serving_report"]
    assert timed.serving_report([(6, False), (6, True)]) == pytest.approx(
        3.0 + 2 * 1.5 + 6 * 32 / 40.0 + 6 * 32 / (40.0 * cost.INT8_SPEEDUP))


@pytest.mark.parametrize("configfile, expected, names", [
    ("config/studies/xtc-main.yaml", XTC_MAIN, ["xtc-main"]),
    ("config/studies/layer-reduction.yaml", LAYER_REDUCTION, ["layer-reduction"]),
    ("config/studies/budget.yaml", BUDGET, ["budget"]),
    ("config/studies/kd-variants.yaml", KD_VARIANTS, ["kd-variants"]),
    ("config/studies/lr.yaml", LR, ["lr"]),
    ("config/studies/all.yaml", ALL, ["xtc-main", "layer-reduction", "budget", "kd-variants", "lr"]),
])
def test_the_plan_has_the_dry_run_s_jobs(configfile, expected, names):
    p = plan.load(configfile)
    aggregates = {f"aggregate_{n.replace('-', '_')}": 1 for n in names}
    assert dict(plan.counts(p)) == {"runs_table": len(names), "index_trained": 1, "all": 1, **expected, **aggregates}
    summary = p.summary()
    assert summary["jobs"] == sum(plan.counts(p).values())
    assert summary["gpu_hours"] > 0 and summary["critical_path_hours"] > 0 and summary["disk_bytes"] > 0
    assert summary["max_gpus_at_once"] >= 8  # at least one teacher per task at once
    assert all(value > 0 for value in summary["peak_gpu_memory_bytes"].values())


def test_the_critical_path_is_the_longest_chain():
    p = plan.load("config/studies/xtc-main.yaml")
    critical, _, chain = p.schedule()
    assert critical == pytest.approx(sum(p.nodes[n].seconds for n in chain))
    for first, second in itertools.pairwise(chain):
        assert first in p.nodes[second].deps
    # a 36-epoch step-1 student of QQP (its 40k dev pairs evaluated ~440 times outweigh MNLI's 8% more training
    # examples), then its 18-epoch quantized student
    assert [n.split()[0] for n in chain[:3]] == ["evaluate_given_teacher", "distill", "distill"]
    assert "task~qqp/layers~6/wbits~fp" in chain[1] and "epochs~36" in chain[1] and "task~qqp/layers~6" in chain[2]


def test_plan_json_from_the_command_line_is_torch_free():
    code = ("import sys, json; from xtc.cli import main; main(['plan', '--configfile', "
            "'config/studies/xtc-main.yaml', '--json']); sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    for key in ("gpu_hours", "critical_path_hours", "disk_bytes", "peak_gpu_memory_bytes", "downloads", "rules"):
        assert key in summary
    assert summary["rules"]["distill"]["jobs"] == 64


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".owner")


def test_disk_formula_equals_the_bytes_of_real_run_directories(tmp_path):
    """A teacher, an FP step-1 student and a W1A8 student from it, trained and exported by `xtc`: each run
    directory holds what ``run_dir_bytes`` says, within 0.5%."""
    sys.path.insert(0, str(REPO / "tests"))
    from textdata import tiny_tokenizer, write_glue_tsv

    from xtc.cli import main
    from xtc.models import random_model, tiny_bert_config

    for split, n in (("train", 48), ("validation", 24)):
        write_glue_tsv(tmp_path / "glue", "rte", split, n, seed=3)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    config = tiny_bert_config(vocab_size=len(tokenizer), num_hidden_layers=6)
    random_model(config, seed=0).save_pretrained(tmp_path / "pre")
    tokenizer.save_pretrained(tmp_path / "pre")
    args = ["--task", "rte", "--batch-size", "8", "--lr", "1e-3", "--max-seq-length", "32", "--eval-every", "4",
            "--data-dir", str(tmp_path / "glue"), "--device", "cpu", "--epochs", "2"]
    assert main(["finetune", "--model", str(tmp_path / "pre"), *args, "--out", str(tmp_path / "teacher")]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "teacher"), "--layers", "3", *args,
                 "--out", str(tmp_path / "fp3")]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "teacher"), "--init", str(tmp_path / "fp3"),
                 "--weight-bits", "1", "--act-bits", "8", *args, "--out", str(tmp_path / "w1")]) == 0
    assert main(["export", "--model", str(tmp_path / "w1"), "--out", str(tmp_path / "w1" / "packed")]) == 0
    shape = cost.model_shape(str(tmp_path / "pre"))
    assert shape.vocab == len(tokenizer) and shape.layers == 6
    steps, evals = 12, 12 // 4 + 2  # 48 / 8 = 6 steps per epoch, 2 epochs
    for run, layers, bits in (("teacher", 6, None), ("fp3", 3, None), ("w1", 3, 1)):
        planned = cost.run_dir_bytes(shape, layers, 2, steps, evals, bits)
        assert planned == pytest.approx(_bytes(tmp_path / run), rel=0.005), run


def test_the_cli_and_the_cost_model_name_the_same_calibration_file():
    from xtc import cli

    assert cli.CALIBRATION == cost.CALIBRATION == REPO / "config" / "calibration.json"
