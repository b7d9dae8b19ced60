"""One row per configuration: sub-metric means and stds over seeds (percent), the GLUE average, size and ratios.

A configuration is every grid axis except the seed, with the tasks as columns, as the paper's tables are laid
out. Epochs are the exception that needs a rule, because the recipe sets the budget per task (MNLI 18, MRPC 4):
within a group of the other axes, when every task ran the same number k of budgets, the i-th smallest budget of
each task is one configuration (k = 1: the recipe's per-task budget; k > 1: a budget axis such as MNLI 9/18/36
with MRPC 2/4/8), and the ``epochs`` cell lists the budgets per task when they differ; when tasks ran different
numbers of budgets, each epoch count is its own configuration.

GLUE average (``xtc.metrics.glue_average``, XTC convention: one number per task, its selection metric, WNLI
excluded). A configuration that lacks some of the 8 tasks gets the average over the tasks it has, flagged by
``glue_avg_complete = False`` and ``glue_avg_tasks`` (``2/8: MNLI, MRPC``); the tables mark it with a dagger
and never compare it with the paper's 8-task averages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xtc.tasks import get_task
from xtc.metrics import XTC_GLUE_TASKS, glue_average
from xtc.report.collect import SIZE_COLUMNS
from xtc.study.grid import BASE
from xtc.report.columns import (AXES, CHECKPOINTS, FP, METRIC_SHORT, TASK_ORDER, MetricColumn, bits_sort_key,
                                kd_sort_key, metric_columns, model_label, study_columns)

_OTHER_AXES = [axis for axis in AXES if axis != "epochs"]


def assign_configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus ``config`` (0, 1, ... in the paper's row order) and ``epochs_label`` (the table's cell)."""
    runs = runs.copy()
    keys, labels = [], []
    for _, group in runs.groupby(_OTHER_AXES, sort=False):
        budgets = {task: sorted(sub["epochs"].unique()) for task, sub in group.groupby("task")}
        counts = {len(b) for b in budgets.values()}
        if len(counts) == 1:  # the k-th budget of every task is one configuration (k = 1: the recipe's budget)
            levels = [{task: b[k] for task, b in budgets.items()} for k in range(counts.pop())]
        else:  # tasks ran different numbers of budgets: one configuration per epoch count
            levels = [{task: e for task, b in budgets.items() if e in b}
                      for e in sorted({e for b in budgets.values() for e in b})]
        for level in levels:
            index = group.index[[level.get(t) == e for t, e in zip(group["task"], group["epochs"])]]
            values = sorted(set(level.values()))
            label = (str(values[0]) if len(values) == 1 else
                     ", ".join(f"{get_task(t).title} {level[t]}" for t in _task_order(level)))
            keys.append((index, (*group.iloc[0][_OTHER_AXES], int(values[0]))))
            labels.append((index, label))
    order = sorted(range(len(keys)), key=lambda i: _row_order(dict(zip([*_OTHER_AXES, "epochs"], keys[i][1]))))
    for config, i in enumerate(order):
        runs.loc[keys[i][0], "config"] = config
        runs.loc[labels[i][0], "epochs_label"] = labels[i][1]
    runs["config"] = runs["config"].astype(int)
    return runs


def _row_order(axes: dict) -> tuple:
    """Teacher first, then 12, 6, 5 layers; within a depth FP, 1-bit, 2-bit (the paper's table order)."""
    return (-axes["layers"], axes["wbits"] != FP, bits_sort_key(axes["wbits"]), bits_sort_key(axes["abits"]),
            axes["teacher_layer"], kd_sort_key(axes["kd"]), axes["epochs"], axes["lr"], axes["da"],
            axes["recipe"] != BASE, axes["recipe"])  # the base recipe first, then the named ones


def _task_order(tasks) -> list[str]:
    return [t for t in TASK_ORDER if t in set(tasks)]


def summarize(long: pd.DataFrame, sizes: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The table: one row per configuration of ``runs`` (from ``assign_configurations``).

    ``long`` is ``collect_metrics``' frame, ``sizes`` ``collect_sizes``' (same index as ``runs``). Per sub-metric
    and checkpoint: ``<slug>_<best|last>_mean`` and ``_std`` (percent; sample std over seeds, NaN for one seed),
    ``glue_avg_<checkpoint>_mean``/``_std``, the size columns averaged over the configuration's runs (task heads
    differ by a few KiB), and ``<task>_best_epoch`` (mean over seeds of the epoch of the best checkpoint).
    """
    config_of = runs["config"]
    long = long.assign(config=long["run_dir"].map(dict(zip(runs["run_dir"], config_of))))
    columns = study_columns(set(runs["task"]))
    records = []
    for config, group in runs.groupby("config"):
        first = group.iloc[0]
        tasks = _task_order(group["task"])
        record = {axis: first[axis] for axis in AXES}
        record["epochs"] = first["epochs_label"]
        record.update(
            config=config, model=model_label(first["layers"], first["wbits"], first["abits"]),
            tasks=", ".join(get_task(t).title for t in tasks), n_tasks=len(tasks),
            seeds=",".join(str(s) for s in sorted(group["seed"].unique())), n_seeds=group["seed"].nunique(),
            n_runs=len(group),
        )
        mine = long[long["config"] == config]
        for checkpoint in CHECKPOINTS:
            point = mine[mine["checkpoint"] == checkpoint]
            for column in columns:
                values = 100 * point.loc[(point["task"] == column.task) & (point["metric"] == column.key), "value"]
                record[f"{column.slug}_{checkpoint}_mean"] = values.mean() if len(values) else np.nan
                record[f"{column.slug}_{checkpoint}_std"] = values.std() if len(values) else np.nan
            record.update(_glue_average(point, tasks, checkpoint))
        for task in tasks:
            best = mine[(mine["task"] == task) & (mine["checkpoint"] == "best")].drop_duplicates("run_dir")
            record[f"{task}_best_epoch"] = pd.to_numeric(best["epoch"], errors="coerce").mean()
        size = sizes.loc[group.index]
        for name in SIZE_COLUMNS[:-1]:
            record[name] = size[name].mean()
        record["size_from"] = ", ".join(sorted(set(size["size_from"]) - {""}))
        records.append(record)
    return add_retention(pd.DataFrame(records).reset_index(drop=True), set(runs["task"]))


def add_retention(summary: pd.DataFrame, tasks: set[str]) -> pd.DataFrame:
    """``retention_<checkpoint>``: a configuration's headline score (see :func:`headline`) over the FP teacher's
    best-checkpoint score, in percent. The teacher is the full-depth FP configuration trained without KD (the
    fine-tuned teacher every student distils from, whose best checkpoint is the one distilled); without exactly one
    such row the column is NaN."""
    _, prefix, _ = headline(summary, tasks)
    teacher = teacher_rows(summary)
    reference = teacher[f"{prefix}_best_mean"].iloc[0] if len(teacher) == 1 else np.nan
    for checkpoint in CHECKPOINTS:
        summary[f"retention_{checkpoint}"] = 100 * summary[f"{prefix}_{checkpoint}_mean"] / reference
    return summary


def teacher_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The FP teacher's row(s): full depth, full precision, trained without KD, all layers kept."""
    return summary[(summary["wbits"] == FP) & (summary["abits"] == FP) & (summary["kd"] == "none")
                   & (summary["layers"] == summary["layers"].max()) & summary["teacher_layer"].map(lambda t: not t)]


def _glue_average(point: pd.DataFrame, tasks: list[str], checkpoint: str) -> dict:
    """Mean: the average of the per-task seed means; std: the sample std of the per-seed averages (seeds that
    ran every averaged task)."""
    averaged = [t for t in XTC_GLUE_TASKS if t in tasks]
    out = {f"glue_avg_{checkpoint}_mean": np.nan, f"glue_avg_{checkpoint}_std": np.nan,
           "glue_avg_tasks": f"{len(averaged)}/{len(XTC_GLUE_TASKS)}", "glue_avg_complete": False}
    if not averaged:
        return out
    out["glue_avg_complete"] = len(averaged) == len(XTC_GLUE_TASKS)
    if not out["glue_avg_complete"]:
        out["glue_avg_tasks"] += ": " + ", ".join(get_task(t).title for t in averaged)
    point = point[point["task"].isin(averaged)]
    means = point.groupby(["task", "metric"])["value"].mean()
    scores = {task: means[task].to_dict() for task in averaged}
    out[f"glue_avg_{checkpoint}_mean"] = 100 * glue_average(scores, tasks=averaged)
    per_seed = []
    for _, seed_rows in point.groupby("seed"):
        if set(seed_rows["task"]) == set(averaged):
            by_task = seed_rows.groupby("task")
            per_seed.append(glue_average({t: dict(zip(r["metric"], r["value"])) for t, r in by_task}, tasks=averaged))
    if len(per_seed) > 1:
        out[f"glue_avg_{checkpoint}_std"] = 100 * float(np.std(per_seed, ddof=1))
    return out


def headline(summary: pd.DataFrame | None, tasks: set[str] | list[str]) -> tuple[MetricColumn | None, str, str]:
    """What a figure plots per configuration: the GLUE average, or the task's selection metric when the study ran
    one task. Returns (the column, or None for the average; the summary column's prefix; the axis label)."""
    tasks = _task_order(tasks)
    if len(tasks) == 1:
        spec = get_task(tasks[0])
        column = next(c for c in metric_columns(spec.name) if c.key == spec.selection_metric)
        return column, column.slug, selection_label(spec.name)
    averaged = [t for t in XTC_GLUE_TASKS if t in tasks]
    if len(averaged) == len(XTC_GLUE_TASKS):
        return None, "glue_avg", "GLUE average (%)"
    return None, "glue_avg", f"Average over {len(averaged)} GLUE tasks (%)"


def selection_label(task: str) -> str:
    """``MNLI-m acc (%)``, ``CoLA MCC (%)``, ``MRPC acc (%)``: a task's selection metric as an axis label."""
    spec = get_task(task)
    column = next(c for c in metric_columns(spec.name) if c.key == spec.selection_metric)
    short = METRIC_SHORT[spec.selection_metric.rpartition("/")[2]]
    return f"{column.label if column.label.endswith(short) else f'{column.label} {short}'} (%)"


def pareto_front(size: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats (smaller or equal size and higher or equal score, one
    strictly); NaN points are never on the front."""
    size, score = np.asarray(size, float), np.asarray(score, float)
    valid = ~(np.isnan(size) | np.isnan(score))
    front = np.zeros(len(size), bool)
    for i in np.flatnonzero(valid):
        others = valid & (size <= size[i]) & (score >= score[i]) & ((size < size[i]) | (score > score[i]))
        front[i] = not others.any()
    return front
