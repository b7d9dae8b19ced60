"""The paper's reported numbers (``config/paper/*.csv``) as data, and their join with our configurations.

Schema, one row per reported number (percent, as printed), every row with its ``source``:
``model`` (as the source names it), ``method`` (``XTC``, ``DeepSpeed re-run``, ``BinaryBERT``, ``BiT``,
``BERT-base``), ``task`` (a GLUE task, or ``glue`` for an average), ``metric`` (a metric key of metrics.json such as
``mnli_m/accuracy`` or ``f1``; ``average`` for ``glue``), ``value``, ``weight_bits``, ``embedding_bits``,
``act_bits`` (``1``, ``2``, ``8``... or ``fp``), ``layers``, ``teacher_layer`` (0-based, ``1,3,5,7,9,11``; empty
when all layers are kept), ``kd`` (a KD variant; empty if unknown), ``da`` (0/1; empty if unknown), ``size_mb``
(MiB; empty if unknown), ``size_source`` (reported, or how it was derived), ``source``, ``note``.

Only ``method == "XTC"`` rows are joined to our cells (the paper we reproduce); every row with a size is drawn
beside ours in the size figure.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xtc.tasks import get_task
from xtc.report.collect import _layer_list
from xtc.report.columns import study_columns
from xtc.study.grid import precision

PAPER_COLUMNS = ("model", "method", "task", "metric", "value", "weight_bits", "embedding_bits", "act_bits", "layers",
                 "teacher_layer", "kd", "da", "size_mb", "size_source", "source", "note")
REFERENCE_METHOD = "XTC"
GLUE = "glue"
AVERAGE = "average"
_JOIN_KEYS = ("method", "task", "metric", "weight_bits", "act_bits", "layers", "teacher_layer", "kd")


def load_paper(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """All rows of the given CSVs (plus ``file``), validated: known columns, a source on every row, percent values
    in range, task/metric keys that metrics.json uses. No paths: an empty frame with the columns."""
    frames = []
    for path in paths:
        path = Path(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if tuple(frame.columns) != PAPER_COLUMNS:
            raise ValueError(f"{path}: columns {list(frame.columns)}; a paper CSV has exactly {list(PAPER_COLUMNS)}")
        for line, row in enumerate(frame.to_dict("records"), start=2):
            _check_row(path, line, row)
        frames.append(frame.assign(file=str(path)))
    if not frames:
        return pd.DataFrame(columns=[*PAPER_COLUMNS, "file"])
    paper = pd.concat(frames, ignore_index=True)
    paper["value"] = paper["value"].astype(float)
    paper["layers"] = paper["layers"].astype(int)
    paper["size_mb"] = pd.to_numeric(paper["size_mb"].replace("", np.nan))
    for column in ("weight_bits", "embedding_bits", "act_bits"):
        paper[column] = paper[column].map(precision)
    paper["teacher_layer"] = paper["teacher_layer"].map(_layer_list)
    keys = paper[paper["method"] == REFERENCE_METHOD]
    duplicated = keys.duplicated(subset=list(_JOIN_KEYS), keep=False)
    if duplicated.any():
        cells = keys[duplicated][["file", "model", "task", "metric"]].to_dict("records")
        raise ValueError(f"the paper CSVs report the same cell twice: {cells}")
    return paper


def _check_row(path: Path, line: int, row: dict[str, str]) -> None:
    def fail(message: str) -> None:
        raise ValueError(f"{path} line {line} ({row.get('model')!r} {row.get('task')}/{row.get('metric')}): {message}")

    if not row["source"].strip():
        fail("no source; every reported number says where it comes from")
    try:
        value = float(row["value"])
        layers = int(row["layers"])
        size = float(row["size_mb"]) if row["size_mb"] else None
        for column in ("weight_bits", "embedding_bits", "act_bits"):
            precision(row[column])
        teacher_layer = _layer_list(row["teacher_layer"])
    except ValueError as error:
        fail(str(error))
    if not 0 <= value <= 100:
        fail(f"value {value} is not a percentage in [0, 100]")
    if not 1 <= layers <= 48:
        fail(f"layers {layers} out of range")
    if teacher_layer and len(teacher_layer.split(",")) != layers:
        fail(f"teacher_layer {teacher_layer!r} does not list {layers} layers")
    if size is not None and size <= 0:
        fail(f"size_mb {size} must be positive")
    if row["task"] == GLUE:
        if row["metric"] != AVERAGE:
            fail(f"task 'glue' takes metric 'average', not {row['metric']!r}")
    elif row["metric"] not in get_task(row["task"]).metric_keys:
        fail(f"metric {row['metric']!r} is not one of {row['task']}'s keys {list(get_task(row['task']).metric_keys)}")


def join_paper(summary: pd.DataFrame, paper: pd.DataFrame, tasks: Collection[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``paper_<slug>`` and ``delta_<slug>`` (ours at the best checkpoint, seed mean, minus the paper; points)
    for every cell the paper reports of the study's ``tasks``, and ``paper_glue_avg``/``delta_glue_avg`` for
    complete 8-task averages.

    A configuration matches a paper row on weight bits, activation bits, layers, the KD variant (when the paper
    row names one) and the kept teacher layers (when both name them); lr, budget and augmentation are ignored.
    Returns the widened summary and the comparison in long form (one row per matched cell).
    """
    summary = summary.copy()
    reference = paper[paper["method"] == REFERENCE_METHOD]
    columns = {(c.task, c.key): c for c in study_columns(tasks)}
    comparisons = []
    for index, row in summary.iterrows():
        for cell in reference.to_dict("records"):
            if not _matches(row, cell):
                continue
            if cell["task"] == GLUE:
                if not row["glue_avg_complete"]:
                    continue
                slug, label = "glue_avg", "GLUE avg"
            elif (cell["task"], cell["metric"]) in columns:
                column = columns[(cell["task"], cell["metric"])]
                slug, label = column.slug, column.label
            else:
                continue
            ours = row[f"{slug}_best_mean"]
            summary.loc[index, f"paper_{slug}"] = cell["value"]
            summary.loc[index, f"delta_{slug}"] = ours - cell["value"]
            comparisons.append({"config": row["config"], "model": row["model"], "metric": label, "slug": slug,
                                "ours": ours, "ours_std": row[f"{slug}_best_std"], "paper": cell["value"],
                                "delta": ours - cell["value"], "paper_model": cell["model"],
                                "source": cell["source"]})
    return summary, pd.DataFrame(comparisons, columns=["config", "model", "metric", "slug", "ours", "ours_std",
                                                       "paper", "delta", "paper_model", "source"])


def _matches(row: pd.Series, cell: dict) -> bool:
    if (row["wbits"], row["abits"], row["layers"]) != (cell["weight_bits"], cell["act_bits"], cell["layers"]):
        return False
    if cell["kd"] and cell["kd"] != row["kd"]:
        return False
    return not (cell["teacher_layer"] and row["teacher_layer"] and cell["teacher_layer"] != row["teacher_layer"])
