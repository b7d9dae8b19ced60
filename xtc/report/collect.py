"""Read a study's runs table and the files its runs left behind into tidy data frames (pandas only, no torch).

``runs.tsv`` (written by the workflow, one row per run) says where each run's ``metrics.json`` and packed
export's ``size.json`` are; ``collect_metrics`` turns the metrics into one row per (run, checkpoint, metric key)
and ``collect_sizes`` the sizes into one row per run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xtc.tasks import get_task
from xtc.report.columns import AXES, CHECKPOINTS, FP, GIVEN, MIB, RUNS_COLUMNS
from xtc.study.grid import BASE, precision


def read_runs_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``runs.tsv`` with normalized axes: ints for layers/epochs/da/seed, float lr, ``'fp'`` for full precision
    (``xtc.study.grid.precision`` maps the other spellings a hand-written table may use),
    ``teacher_layer`` as ``'1,3,5,7,9,11'`` (or ``''``), ``kd`` ``'none'`` when empty. A given teacher (fine-tuned
    elsewhere, only evaluated here) has no epochs, lr or seed: they read as ``GIVEN`` (0)."""
    path = Path(path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "recipe" not in table.columns:  # written before the recipe axis: every run is the study's base recipe
        table["recipe"] = BASE
    table["recipe"] = table["recipe"].replace("", BASE)
    missing = [c for c in RUNS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; a runs table has exactly {list(RUNS_COLUMNS)} "
                         f"(found {list(table.columns)})")
    if table.empty:
        raise ValueError(f"{path} lists no runs; the study's grid is empty")
    table = table[list(RUNS_COLUMNS)].map(str.strip)
    for row, task in enumerate(table["task"], start=2):
        _checked(path, row, "task", task, lambda v: get_task(v).name)
    for column, parse in (("layers", int), ("epochs", _given(_int)), ("seed", _given(int)), ("da", _flag),
                          ("lr", _given(float)),
                          ("wbits", precision), ("abits", precision), ("teacher_layer", _layer_list), ("kd", _kd)):
        table[column] = [_checked(path, row, column, value, parse) for row, value in enumerate(table[column], 2)]
    duplicated = table.duplicated(subset=["study", "task", *AXES, "seed"], keep=False)
    if duplicated.any():
        raise ValueError(f"{path} lists the same run twice (lines {[i + 2 for i in np.flatnonzero(duplicated)]}); "
                         "every (task, axes, seed) must appear once")
    return table


def _checked(path: Path, row: int, column: str, value: str, parse) -> Any:
    try:
        return parse(value)
    except ValueError as error:
        raise ValueError(f"{path} line {row}: bad {column} {value!r} ({error})") from None


def _given(parse):
    """``parse``, except that an empty cell (a given teacher's epochs, lr and seed) reads as ``GIVEN``."""
    return lambda text: parse(text) if text else parse(str(GIVEN))


def _int(text: str) -> int:
    number = float(text)
    if number != int(number):
        raise ValueError("expected a whole number")
    return int(number)


def _flag(text: str) -> int:
    flags = {"0": 0, "1": 1, "false": 0, "true": 1, "no": 0, "yes": 1}
    if text.lower() not in flags:
        raise ValueError("expected 0 or 1")
    return flags[text.lower()]


def _layer_list(text: str) -> str:
    """``'1,3,5'`` from ``'1,3,5'``, ``'[1, 3, 5]'`` or ``'1 3 5'``; ``''`` when the run kept the default."""
    numbers = re.findall(r"-?\d+", text)
    if re.sub(r"[\d\s,\[\]()-]", "", text):
        raise ValueError("expected comma-separated 0-based teacher layer indices")
    return ",".join(str(int(n)) for n in numbers)


def _kd(text: str) -> str:
    return text.lower() or "none"


def resolve(path: str, base_dir: str | os.PathLike[str] | None) -> Path:
    """A path of the runs table: relative ones are relative to ``base_dir`` (Snakemake's working directory)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() or base_dir is None else Path(base_dir) / candidate


def _read_json(path: Path, what: str, run: Mapping[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} of run {run['task']}/seed {run['seed']} not found: {path}; the run did "
                                "not finish, or runs.tsv points at the wrong directory")
    return json.loads(path.read_text())


def collect_metrics(runs: pd.DataFrame, base_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per (run, checkpoint, metric key): the runs table's columns plus ``checkpoint`` (best/last),
    ``metric``, ``value`` (a fraction, as metrics.json stores it), ``global_step`` and ``epoch``."""
    rows = []
    for run in runs.to_dict("records"):
        metrics = _read_json(resolve(run["run_dir"], base_dir) / "metrics.json", "metrics.json", run)
        spec = get_task(run["task"])
        if metrics.get("task", spec.name) != spec.name:
            raise ValueError(f"{run['run_dir']}/metrics.json is for task {metrics['task']!r}, runs.tsv says "
                             f"{spec.name!r}")
        if "best" not in metrics and "metrics" in metrics:  # `xtc evaluate` of a given teacher: one evaluation
            metrics = {checkpoint: {"metrics": metrics["metrics"]} for checkpoint in CHECKPOINTS}
        for checkpoint in CHECKPOINTS:
            if checkpoint not in metrics:
                raise ValueError(f"{run['run_dir']}/metrics.json lacks {checkpoint!r}; found {sorted(metrics)}")
            point = metrics[checkpoint]
            for key in spec.metric_keys:
                if key not in point["metrics"]:
                    raise ValueError(f"{run['run_dir']}/metrics.json {checkpoint} lacks {key!r} of {spec.name}; "
                                     f"found {sorted(point['metrics'])}")
                rows.append({**run, "checkpoint": checkpoint, "metric": key, "value": float(point["metrics"][key]),
                             "global_step": point.get("global_step"), "epoch": point.get("epoch")})
    return pd.DataFrame(rows)


SIZE_COLUMNS = ("size_mb", "theoretical_mb", "compression_quantized_part", "compression_whole_model",
                "compression_whole_model_on_disk", "size_from")


def collect_sizes(runs: pd.DataFrame, base_dir: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Per run: the packed file's size (MiB), the theoretical minimum and the compression ratios of size.json.

    Runs without a packed export (FP students) have no size, except the FP teacher, whose FP32 size every
    size.json records (``teacher.fp32_bytes``, same task). Returns the frame (index = runs' index) and the
    conventions text of the first size.json (empty if none).
    """
    reports: dict[Any, dict[str, Any]] = {}
    for index, run in runs.iterrows():
        if run["packed_dir"]:
            reports[index] = _read_json(resolve(run["packed_dir"], base_dir) / "size.json", "size.json", run)
    teacher_by_task = {runs.at[i, "task"]: r["teacher"] for i, r in reports.items()}
    rows = []
    for index, run in runs.iterrows():
        row = dict.fromkeys(SIZE_COLUMNS, np.nan)
        row["size_from"] = ""
        report, teacher = reports.get(index), teacher_by_task.get(run["task"])
        if report is not None:
            file_bytes = report.get("packed_file_bytes")
            compression = report["compression"]
            row.update(
                size_mb=np.nan if file_bytes is None else file_bytes / MIB,
                theoretical_mb=report["theoretical_bytes"]["whole_model"] / MIB,
                compression_quantized_part=compression["quantized_part"],
                compression_whole_model=compression["whole_model"],
                compression_whole_model_on_disk=_number(compression.get("whole_model_on_disk")),
                size_from="packed export",
            )
        elif teacher is not None and _is_teacher(run, teacher["layers"]):
            mb = teacher["fp32_bytes"] / MIB
            row.update(size_mb=mb, theoretical_mb=mb, compression_quantized_part=1.0, compression_whole_model=1.0,
                       compression_whole_model_on_disk=1.0, size_from="FP32 teacher (size.json)")
        rows.append(row)
    conventions = next((r.get("conventions", {}) for r in reports.values()), {})
    return pd.DataFrame(rows, index=runs.index), conventions


def _is_teacher(run: Mapping[str, Any], teacher_layers: int) -> bool:
    return run["wbits"] == FP and run["abits"] == FP and run["layers"] == teacher_layers and not run["teacher_layer"]


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)
