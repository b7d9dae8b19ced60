"""xtc.report on a tiny synthetic study: table rows, seed mean/std, GLUE-average convention, paper join, figures,
the command line, the Snakemake adapter through a real ``snakemake`` run, and no torch import."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xtc.metrics import describe_glue_average
from xtc.report import aggregate, headline, load_results, output_paths, pareto_front, read_runs_table
from xtc.report.__main__ import main as report_main
from xtc.report.columns import RUNS_COLUMNS, study_columns

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted(str(p) for p in (REPO / "config" / "paper").glob("*.csv"))
MIB = 2**20
L6 = "1,3,5,7,9,11"

# (config, seed) -> per task metrics at the best checkpoint; last = best - 0.01 everywhere
def _scores(m: float, mm: float, acc: float, f1: float) -> dict:
    return {"mnli": {"mnli_m/accuracy": m, "mnli_mm/accuracy": mm}, "mrpc": {"accuracy": acc, "f1": f1}}


SCORES = {
    ("teacher", 1): _scores(0.84, 0.85, 0.86, 0.90),
    ("teacher", 2): _scores(0.86, 0.85, 0.88, 0.90),
    ("w1_6l", 1): _scores(0.80, 0.81, 0.70, 0.80),
    ("w1_6l", 2): _scores(0.82, 0.83, 0.74, 0.82),
}
AXES = {
    "teacher": {"layers": 12, "teacher_layer": "", "wbits": "fp", "abits": "none", "kd": "none", "epochs": 3},
    "w1_6l": {"layers": 6, "teacher_layer": L6, "wbits": "1", "abits": "8", "kd": "one_stage", "epochs": 3},
}
TEACHER_BYTES = 438_000_000
PACKED_BYTES = 12 * MIB


def _size_json(packed_bytes: int) -> dict:
    return {
        "teacher": {"layers": 12, "fp32_bytes": TEACHER_BYTES, "params": TEACHER_BYTES // 4},
        "student": {"layers": 6, "bits": {"linear": 1, "word_embeddings": 1}},
        "theoretical_bytes": {"quantized_part": 8 * MIB, "whole_model": 11.5 * MIB},
        "packed_file_bytes": packed_bytes,
        "packed_over_theoretical": packed_bytes / (11.5 * MIB),
        "compression": {"quantized_part": 51.8, "whole_model": 34.9,
                        "whole_model_on_disk": TEACHER_BYTES / packed_bytes},
        "conventions": {"quantized_part": "XTC module set at FP32 over its bits", "whole_model": "everything"},
    }


def make_study(root: Path, study: str = "tiny") -> Path:
    """runs.tsv with relative paths (as the workflow writes them) + metrics.json/size.json under ``root``."""
    rows = []
    for (config, seed), by_task in SCORES.items():
        for task, best in by_task.items():
            run_dir = Path("results/runs") / config / task / f"seed{seed}"
            (root / run_dir).mkdir(parents=True)
            last = {k: v - 0.01 for k, v in best.items()}
            metrics = {"task": task, "selection_metric": "x", "selection_rule": "x",
                       "best": {"global_step": 10, "epoch": 2.0, "metrics": best},
                       "last": {"global_step": 15, "epoch": 3.0, "metrics": last}, "history": []}
            (root / run_dir / "metrics.json").write_text(json.dumps(metrics))
            packed = ""
            if config != "teacher":
                packed = str(run_dir / "packed")
                (root / packed).mkdir()
                (root / packed / "size.json").write_text(json.dumps(_size_json(PACKED_BYTES + seed * MIB)))
            rows.append({"study": study, "task": task, **AXES[config], "lr": "5e-05", "da": 0, "seed": seed,
                         "run_dir": str(run_dir), "packed_dir": packed})
    runs = root / "results" / study / "runs.tsv"
    runs.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=RUNS_COLUMNS).to_csv(runs, sep="\t", index=False)
    return runs


@pytest.fixture
def study(tmp_path, monkeypatch):
    runs = make_study(tmp_path)
    monkeypatch.chdir(tmp_path)  # the runs table's paths are relative to the working directory, as in Snakemake
    return tmp_path, runs


def test_one_row_per_configuration_with_seed_mean_and_std(study):
    _, runs = study
    results = load_results(runs, "tiny", PAPER)
    summary = results.summary.set_index("model")
    assert list(summary.index) == ["FP 12L", "W1A8 6L"]  # teacher first, as in the paper
    assert summary.loc["W1A8 6L", "n_seeds"] == 2 and summary.loc["W1A8 6L", "n_runs"] == 4
    row = summary.loc["W1A8 6L"]
    assert row["mnli_m_acc_best_mean"] == pytest.approx(81.0)
    assert row["mnli_m_acc_best_std"] == pytest.approx(math.sqrt(2))  # sample std of 80, 82
    assert row["mrpc_f1_best_mean"] == pytest.approx(81.0)
    assert row["mnli_m_acc_last_mean"] == pytest.approx(80.0)
    # GLUE average (selection metrics: MNLI-m acc, MRPC acc) over the 2 tasks present, flagged as partial
    assert row["glue_avg_best_mean"] == pytest.approx((81.0 + 72.0) / 2)
    assert row["glue_avg_best_std"] == pytest.approx(np.std([(80 + 70) / 2, (82 + 74) / 2], ddof=1))
    assert not row["glue_avg_complete"] and row["glue_avg_tasks"] == "2/8: MNLI, MRPC"
    assert row["size_mb"] == pytest.approx(13.5) and row["compression_quantized_part"] == pytest.approx(51.8)
    assert summary.loc["FP 12L", "size_mb"] == pytest.approx(TEACHER_BYTES / MIB)
    assert summary.loc["FP 12L", "size_from"] == "FP32 teacher (size.json)"
    assert row["mnli_best_epoch"] == 2.0
    # retention: the headline score (here the 2-task average) over the FP teacher's best
    teacher_avg = summary.loc["FP 12L", "glue_avg_best_mean"]
    assert summary.loc["FP 12L", "retention_best"] == pytest.approx(100.0)
    assert row["retention_best"] == pytest.approx(100 * row["glue_avg_best_mean"] / teacher_avg)
    assert row["retention_last"] == pytest.approx(100 * row["glue_avg_last_mean"] / teacher_avg)


def test_paper_join_and_delta(study):
    _, runs = study
    results = load_results(runs, "tiny", PAPER)
    summary = results.summary.set_index("model")
    assert summary.loc["W1A8 6L", "paper_mnli_m_acc"] == 82.9  # 1-bit 6L, teacher layers [1,3,..,11], 1-stage KD
    assert summary.loc["W1A8 6L", "delta_mnli_m_acc"] == pytest.approx(81.0 - 82.9)
    assert summary.loc["FP 12L", "paper_mnli_mm_acc"] == 85.6
    assert "paper_mrpc_acc" not in summary.columns  # the paper CSVs report no MRPC cell
    assert "paper_glue_avg" not in summary.columns  # a 2-task average is never compared with the paper's
    assert len(results.comparison) == 4 and set(results.comparison["metric"]) == {"MNLI-m", "MNLI-mm"}
    assert all(results.comparison["source"].str.contains("arXiv 2206.01859"))
    # retention beside retention: ours over our teacher (MNLI-m 85.0), the paper's over the paper's (84.9)
    cell = results.comparison.set_index(["model", "metric"]).loc[("W1A8 6L", "MNLI-m")]
    assert cell["ours_retention"] == pytest.approx(100 * 81.0 / 85.0)
    assert cell["paper_retention"] == pytest.approx(100 * 82.9 / 84.9)


def test_tables_written_with_conventions(study):
    tmp, runs = study
    tables, _ = output_paths("tiny", tmp / "results/tables", tmp / "figures", [])
    aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], paper=PAPER)
    csv = pd.read_csv(tables["csv"], keep_default_na=False)
    assert len(csv) == 2 and list(csv["model"]) == ["FP 12L", "W1A8 6L"]
    for column in ("mnli_m_acc_best_mean", "mnli_mm_acc_best_std", "mrpc_f1_last_mean", "mrpc_acc_best_mean",
                   "glue_avg_best_mean", "glue_avg_tasks", "paper_mnli_m_acc", "delta_mnli_m_acc", "size_mb",
                   "compression_quantized_part", "compression_whole_model", "seed" + "s"):
        assert column in csv.columns, column
    md = tables["md"].read_text()
    retention = csv.set_index("model").loc["W1A8 6L", "retention_best"]
    assert 0 < retention < 100
    assert describe_glue_average() in md  # the convention is named
    assert "over the tasks present only" in md and "Fixed across this study: Epochs 3, LR 5e-05, DA off." in md
    assert "| W1A8 6L | 6 | [1,3,5,7,9,11] | 1 | 8 | one_stage | 2 | 81.0 ± 1.4 | 82.0 ± 1.4 | 81.0 ± 1.4 | " \
           f"72.0 ± 2.8 | 76.5 ± 2.1† | {retention:.1f} | 13.5 | 51.8x | 34.9x |" in md  # partial average, dagger
    assert "| 82.9 | -1.9 | 95.3 | 97.6 |" in md  # paper, delta, and both retentions
    paper = ", ".join(PAPER)
    assert f"No paper value (none in {paper}) for: MRPC F1, MRPC acc of FP 12L, W1A8 6L." in md
    assert "MNLI-m | MNLI-mm | MRPC F1 | MRPC acc | Avg | Retention" in md
    tex = tables["tex"].read_text()
    assert r"\toprule" in tex and r"81.0 $\pm$ 1.4" in tex and r"$-$1.9" in tex and "%" in tex


def test_every_figure_is_written_and_readable(study):
    tmp, runs = study
    kinds = ["pareto", "budget", "kd", "heatmap"]
    tables, figures = output_paths("tiny", tmp / "results/tables", tmp / "figures", kinds)
    aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], paper=PAPER, figures=figures, kinds=kinds)
    assert sorted(p.name for p in (tmp / "figures").iterdir()) == sorted(p.name for p in figures)
    for path in figures:
        assert path.stat().st_size > 1000, path
    from PIL import Image

    with Image.open(figures[0]) as image:  # 300 dpi at about a paper column's width
        assert 800 < image.width < 2000


def test_figures_are_byte_identical_when_rebuilt_later(study, monkeypatch):
    """DVC records the figures' hashes: rebuilding from the same results (at another time) changes no byte."""
    tmp, runs = study
    kinds = ["pareto", "heatmap"]
    built = []
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    for epoch in (None, "1000000000"):  # now, then another date (matplotlib dates its files from SOURCE_DATE_EPOCH)
        if epoch:
            monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        tables, figures = output_paths("tiny", tmp / "results/tables", tmp / "figures", kinds)
        aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], paper=PAPER, figures=figures, kinds=kinds)
        built.append({path.name: path.read_bytes() for path in figures})
    assert sorted(built[0]) == sorted(f"tiny_{k}.{e}" for k in kinds for e in ("png", "pdf"))
    assert built[0] == built[1]


def test_a_single_task_study_plots_the_task_score(tmp_path):
    runs = make_study(tmp_path)
    table = pd.read_csv(runs, sep="\t", dtype=str, keep_default_na=False)
    table[table["task"] == "mnli"].to_csv(runs, sep="\t", index=False)
    results = load_results(runs, "tiny", PAPER, base_dir=tmp_path)
    assert headline(results.summary, results.tasks)[1:] == ("mnli_m_acc", "MNLI-m acc (%)")
    assert results.summary["glue_avg_best_mean"].tolist() == pytest.approx([85.0, 81.0])  # = MNLI-m, flagged 1/8
    tables, figures = output_paths("tiny", tmp_path / "t", tmp_path / "f", ["pareto"])
    aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], paper=PAPER, figures=figures,
              kinds=["pareto"], base_dir=tmp_path)
    assert all(p.stat().st_size > 1000 for p in figures)


def test_figure_paths_must_name_their_kind(study):
    tmp, runs = study
    tables, _ = output_paths("tiny", tmp, tmp, [])
    with pytest.raises(ValueError, match="no output path for the figure kinds"):
        aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], figures=[tmp / "tiny_kd.png"],
                  kinds=["kd", "heatmap"])


def test_command_line(study, capsys):
    tmp, runs = study
    assert report_main(["--runs", str(runs), "--study", "tiny", "--paper", PAPER[0], "--out-tables", "tables",
                        "--out-figures", "figs", "--figures", "heatmap"]) == 0
    assert (tmp / "tables/tiny.md").is_file() and (tmp / "figs/tiny_heatmap.pdf").stat().st_size > 0
    assert report_main(["--runs", str(runs), "--study", "other"]) == 2
    assert "no run of study 'other'" in capsys.readouterr().err


def test_budget_axis_splits_configurations_and_per_task_budgets_do_not(tmp_path):
    runs = make_study(tmp_path)
    table = pd.read_csv(runs, sep="\t", dtype=str, keep_default_na=False)
    table.loc[table["task"] == "mrpc", "epochs"] = "4"  # per-task budget: still one row per configuration
    table.to_csv(runs, sep="\t", index=False)
    results = load_results(runs, "tiny", base_dir=tmp_path)
    assert len(results.summary) == 2 and set(results.summary["epochs"]) == {"MNLI 3, MRPC 4"}
    seed2 = table["seed"] == "2"
    table.loc[seed2, "epochs"] = np.where(table.loc[seed2, "task"] == "mnli", "9", "8")  # a budget axis per task
    table.to_csv(runs, sep="\t", index=False)
    summary = load_results(runs, "tiny", base_dir=tmp_path).summary
    assert list(summary["epochs"]) == ["MNLI 3, MRPC 4", "MNLI 9, MRPC 8"] * 2 and set(summary["n_seeds"]) == {1}
    table.loc[seed2 & (table["task"] == "mrpc"), "epochs"] = "4"  # MNLI ran 2 budgets, MRPC 1: split by epochs
    table.to_csv(runs, sep="\t", index=False)
    assert list(load_results(runs, "tiny", base_dir=tmp_path).summary["epochs"]) == ["3", "4", "9"] * 2


def test_bad_runs_tables_name_the_problem(tmp_path):
    runs = make_study(tmp_path)
    table = pd.read_csv(runs, sep="\t", dtype=str, keep_default_na=False)
    table.drop(columns=["da"]).to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"lacks the columns \['da'\]"):
        read_runs_table(tmp_path / "a.tsv")
    table.assign(task="sst").to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="did you mean 'sst2'"):
        read_runs_table(tmp_path / "b.tsv")
    with pytest.raises(FileNotFoundError, match="metrics.json of run"):
        load_results(runs, "tiny", base_dir=tmp_path / "elsewhere")


def test_pareto_front():
    size = np.array([10.0, 20.0, 15.0, 400.0, np.nan])
    score = np.array([80.0, 79.0, 82.0, 84.0, 90.0])
    assert pareto_front(size, score).tolist() == [True, False, True, True, False]


def test_study_columns_follow_the_paper_order():
    labels = [c.label for c in study_columns({"mrpc", "stsb", "mnli", "cola", "qqp"})]
    assert labels == ["MNLI-m", "MNLI-mm", "QQP F1", "QQP acc", "CoLA", "STS-B Pearson", "STS-B Spearman",
                      "MRPC F1", "MRPC acc"]


def test_importing_xtc_report_does_not_import_torch():
    code = "import sys, xtc.report, xtc.report.figures, xtc.report.__main__; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


SNAKEFILE = """
rule aggregate:
    input:
        runs="results/{study}/runs.tsv".format(study=STUDY),
        metrics=METRICS,
        sizes=SIZES,
    output:
        md="results/tables/tiny.md",
        tex="results/tables/tiny.tex",
        csv="results/tables/tiny.csv",
        figures=["figures/tiny_pareto.png", "figures/tiny_pareto.pdf", "figures/tiny_kd.png", "figures/tiny_kd.pdf"],
    log:
        "logs/aggregate.log",
    params:
        study=STUDY,
        paper=PAPER,
        figures=["pareto", "kd"],
    script:
        SCRIPT
"""


@pytest.mark.slow
def test_adapter_through_a_real_snakemake_run(tmp_path):
    """The adapter with the real ``snakemake`` object: the aggregate rule's interface, in a tiny Snakefile."""
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.is_file():
        pytest.skip(f"no snakemake next to {sys.executable}")
    runs = make_study(tmp_path)
    table = pd.read_csv(runs, sep="\t", dtype=str, keep_default_na=False)
    metrics = [f"{d}/metrics.json" for d in table["run_dir"]]
    sizes = [f"{d}/size.json" for d in table["packed_dir"] if d]
    header = (f"STUDY = 'tiny'\nMETRICS = {metrics!r}\nSIZES = {sizes!r}\nPAPER = {PAPER!r}\n"
              f"SCRIPT = {str(REPO / 'workflow/scripts/aggregate.py')!r}\n")
    (tmp_path / "Snakefile").write_text(header + SNAKEFILE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(snakemake), "--cores", "1", "--quiet", "all"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "results/tables/tiny.md").is_file()
    for name in ("tiny_pareto.png", "tiny_pareto.pdf", "tiny_kd.png", "tiny_kd.pdf"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000
    assert not (tmp_path / "figures/tiny_heatmap.png").exists()
    assert "study tiny: 2 configurations from 8 runs" in (tmp_path / "logs/aggregate.log").read_text()
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


def test_a_given_teacher_evaluated_once_joins_the_tables(study):
    """Paper studies use given fine-tuned teachers: `xtc evaluate` writes their metrics.json without best/last,
    and their runs.tsv row has no seed, epochs or lr (as xtc.study.grid.teacher_row writes it)."""
    tmp, runs = study
    table = pd.read_csv(runs, sep="\t", keep_default_na=False, dtype=str)
    students = table[table["run_dir"].str.contains("w1_6l")]
    given = []
    for task in ("mnli", "mrpc"):
        run_dir = Path("results/teachers") / f"task~{task}" / "given"
        (tmp / run_dir).mkdir(parents=True)
        metrics = SCORES[("teacher", 1)][task]
        (tmp / run_dir / "metrics.json").write_text(json.dumps({"model": f"someone/bert-{task}", "task": task,
                                                                "metrics": metrics}))
        given.append({**dict.fromkeys(RUNS_COLUMNS, ""), "study": "tiny", "task": task, "layers": "12",
                      "wbits": "fp", "abits": "none", "kd": "none", "da": "0", "run_dir": str(run_dir)})
    pd.concat([pd.DataFrame(given), students])[list(RUNS_COLUMNS)].to_csv(runs, sep="\t", index=False)
    kinds = ["pareto", "budget", "kd", "heatmap"]
    tables, figures = output_paths("tiny", tmp / "results/tables", tmp / "figures", kinds)
    aggregate(runs, "tiny", tables["md"], tables["tex"], tables["csv"], paper=PAPER, figures=figures, kinds=kinds)
    assert all(Path(f).stat().st_size > 0 for f in figures)
    csv = pd.read_csv(tables["csv"], keep_default_na=False).set_index("model")
    assert csv.loc["FP 12L", "n_seeds"] == 1 and csv.loc["FP 12L", "mnli_m_acc_best_mean"] == pytest.approx(84.0)
    assert csv.loc["FP 12L", "mnli_m_acc_last_mean"] == pytest.approx(84.0)  # evaluated once: best = last
    teacher_avg = (84.0 + 86.0) / 2  # MNLI-m acc and MRPC acc, the selection metrics
    assert csv.loc["W1A8 6L", "retention_best"] == pytest.approx(100 * csv.loc["W1A8 6L", "glue_avg_best_mean"]
                                                                 / teacher_avg)
    md = tables["md"].read_text()
    assert "| FP 12L | 12 | all | fp | fp | none | given | given | 1 | 84.0 |" in md, md


def test_figure_legends_name_a_given_teacher_given():
    """The budget and kd figures of a paper study hold its given teacher (no epochs or lr): 'given', not 'lr 0'."""
    import pandas as pd

    from xtc.report.columns import GIVEN
    from xtc.report.figures import _variant_label

    base = {"task": "rte", "teacher_layer": "", "kd": "none", "da": 0, "seed": 42, "recipe": "base"}
    frame = pd.DataFrame([
        {**base, "layers": 12, "wbits": "fp", "abits": "fp", "epochs": GIVEN, "lr": float(GIVEN), "seed": GIVEN},
        {**base, "layers": 12, "wbits": "1", "abits": "8", "epochs": 4, "lr": 2e-5, "kd": "one_stage"},
        {**base, "layers": 12, "wbits": "1", "abits": "8", "epochs": 4, "lr": 5e-5, "kd": "one_stage"},
    ])
    labels = list(_variant_label(frame, exclude={"epochs", "kd", "task"}))
    assert labels == ["FP 12L, given", "W1A8 12L, lr 2e-05", "W1A8 12L, lr 5e-05"]
