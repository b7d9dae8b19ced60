"""The workflow's own tables, written through `script:` (never torch):

- rule `runs_table`: results/<study>/runs.tsv (one row per run, the reporting code's input) and
  results/scores/<study>.json (best dev metrics per run, what `dvc metrics show` prints); rows from `params.rows`;
- rule `train`: results/{runs,teachers,data}/index.tsv, the index of everything trained (one path per line).
"""

import csv
import json
from pathlib import Path

COLUMNS = ("study", "task", "layers", "teacher_layer", "wbits", "abits", "kd", "epochs", "lr", "da", "seed",
           "run_dir", "packed_dir")


def write_runs(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)


def label(row: dict) -> str:
    """A short run name for `dvc metrics show`: sst2/L6/W1A8/one_stage/e3/lr5e-05/da0/s42, or sst2/teacher."""
    if row["kd"] == "none" and row["wbits"] == "fp" and not row["packed_dir"] and "teachers" in row["run_dir"]:
        return f"{row['task']}/teacher"
    layers = f"L{row['layers']}" + (f"[{row['teacher_layer']}]" if row["teacher_layer"] else "")
    bits = "FP" if row["wbits"] == "fp" else f"W{row['wbits']}A{row['abits']}"
    return "/".join((row["task"], layers, bits, row["kd"], f"e{row['epochs']}", f"lr{row['lr']}",
                     f"da{row['da']}", f"s{row['seed']}"))


def best_metrics(run_dir: str) -> dict:
    """Best dev metrics of a training run, or the metrics of an evaluated (given) teacher."""
    record = json.loads((Path(run_dir) / "metrics.json").read_text())
    return record["best"]["metrics"] if "best" in record else record["metrics"]


def scores(rows: list[dict]) -> dict:
    return {label(row): best_metrics(row["run_dir"]) for row in rows}


def write_index(paths: list[str], path: Path) -> None:
    path.write_text("".join(f"{item}\n" for item in ["path", *paths]))


def main(snakemake) -> None:
    if snakemake.rule == "train":
        for name in ("runs", "teachers", "data"):
            write_index(snakemake.params[name], Path(snakemake.output[name]))
        return
    rows = snakemake.params.rows
    write_runs(rows, Path(snakemake.output.runs))
    Path(snakemake.output.scores).write_text(json.dumps(scores(rows), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__" and "snakemake" in globals():
    main(snakemake)  # noqa: F821 (injected by Snakemake's script directive)
