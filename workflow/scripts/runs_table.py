"""Snakemake adapter of the runs_table rule (through `script:`, never torch): results/<study>/runs.tsv (one row
per run, the reporting code's input; columns and labels from the run key in xtc/study/grid.py) and
results/scores/<study>.json (best dev metrics per run, what `dvc metrics show` prints); rows from `params.rows`.
"""

import csv
import json
from pathlib import Path

from xtc.study.grid import RUNS_COLUMNS, run_label


def write_runs(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUNS_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in RUNS_COLUMNS} for row in rows)


def best_metrics(run_dir: str) -> dict:
    """Best dev metrics of a training run, or the metrics of an evaluated (given) teacher."""
    record = json.loads((Path(run_dir) / "metrics.json").read_text())
    return record["best"]["metrics"] if "best" in record else record["metrics"]


def scores(rows: list[dict]) -> dict:
    return {run_label(row): best_metrics(row["run_dir"]) for row in rows}


def main(snakemake) -> None:
    rows = snakemake.params.rows
    write_runs(rows, Path(snakemake.output.runs))
    Path(snakemake.output.scores).write_text(json.dumps(scores(rows), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__" and "snakemake" in globals():
    main(snakemake)  # noqa: F821 (injected by Snakemake's script directive)
