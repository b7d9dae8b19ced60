"""The names shared by every report table and figure: the grid axes, one column per GLUE sub-metric, model labels.

Columns come from the ``TASKS`` table (``xtc.tasks``), so a metric key in ``metrics.json`` (``mnli_m/accuracy``,
``f1``...) maps to one CSV slug (``mnli_m_acc``, ``qqp_f1``) and one printed label (``MNLI-m``, ``QQP F1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from xtc.config import KD_VARIANTS
from xtc.tasks import TASKS, get_task
from xtc.metrics import XTC_GLUE_TASKS
from xtc.study.grid import FP, RUNS_COLUMNS, model_label

__all__ = ["AXES", "CHECKPOINTS", "FP", "GIVEN", "KD_ORDER", "MIB", "RUNS_COLUMNS", "MetricColumn", "bits_sort_key",
           "kd_sort_key", "metric_columns", "model_label", "study_columns"]
# A configuration is every axis except seed; task becomes table columns (one row per configuration).
AXES = ("layers", "teacher_layer", "wbits", "abits", "kd", "epochs", "lr", "da", "recipe")
CHECKPOINTS = ("best", "last")
TASK_ORDER = (*XTC_GLUE_TASKS, "wnli")  # the paper's column order; WNLI last (never in the average)
GIVEN = 0  # epochs, lr and seed of a given teacher (fine-tuned elsewhere): not trained here
MIB = 2**20  # "MB" in the BinaryBERT/BiT tables (418 MB for BERT-base) is MiB: docs/method.md, "Model size"
# Display order of the KD variants (xtc.config.KD_VARIANTS), unknown ones (the grid's `_probs` forms) after them.
KD_ORDER = KD_VARIANTS

METRIC_SHORT = {"accuracy": "acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}
_METRIC_ORDER = ("f1", "accuracy", "mcc", "pearson", "spearman")  # QQP/MRPC: F1 then acc, as the paper prints


@dataclass(frozen=True)
class MetricColumn:
    """One GLUE sub-metric as a table column: ``task`` + ``key`` (as in metrics.json), ``slug`` (CSV), ``label``."""

    task: str
    key: str
    slug: str
    label: str


def metric_columns(task: str) -> list[MetricColumn]:
    """The sub-metric columns of one task, in print order (MNLI-m before MNLI-mm, F1 before acc)."""
    spec = get_task(task)
    metrics = sorted(spec.metrics, key=_METRIC_ORDER.index)
    columns = []
    for split in spec.eval_splits:
        for metric in metrics:
            key = spec.metric_key(metric, split.name)
            if split.key_prefix:  # MNLI: the split names the column, as in the paper's "MNLI-m"
                slug = f"{split.key_prefix}_{METRIC_SHORT[metric].lower()}"
                label = f"{spec.title}-{split.key_prefix.rpartition('_')[2]}"
            else:
                slug = f"{spec.name}_{METRIC_SHORT[metric].lower()}"
                label = spec.title if len(spec.metrics) == 1 else f"{spec.title} {METRIC_SHORT[metric]}"
            columns.append(MetricColumn(spec.name, key, slug, label))
    return columns


def study_columns(tasks: set[str] | list[str]) -> list[MetricColumn]:
    """The sub-metric columns of the tasks a study ran, in the paper's task order."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        get_task(unknown[0])  # raises with a did-you-mean
    return [column for task in TASK_ORDER if task in tasks for column in metric_columns(task)]


def kd_sort_key(kd: str) -> tuple[int, str]:
    return (KD_ORDER.index(kd), "") if kd in KD_ORDER else (len(KD_ORDER), kd)


def bits_sort_key(bits: str) -> tuple[int, int]:
    """1, 2, ..., then FP."""
    return (1, 0) if bits == FP else (0, int(bits))
