"""GLUE metrics as small pure functions, the per-task metric dict, and the GLUE average with its convention.

numpy and scipy.stats only (no torch), so aggregation and report code can import it anywhere. Scores are
fractions (accuracy and F1 in [0, 1], MCC and correlations in [-1, 1]); tables multiply by 100.
Argument order is always ``(predictions, labels)``.

Accuracy, F1 and MCC are counted here with scikit-learn's formulas (``accuracy_score``, ``f1_score``,
``matthews_corrcoef``: the same float64 operations on the same integer counts, so the same floats; the tests check
equality against scikit-learn): importing scikit-learn, which imports pandas, cost every training and evaluation
job ~0.5 s, a tenth of a rehearsal job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from xtc.tasks import TaskSpec, get_task


def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    predicted, true = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predicted.shape != true.shape:
        raise ValueError(f"{predicted.size} predictions but {true.size} labels")
    return predicted, true


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    predicted, true = _pair(predictions, labels)
    return float(np.average(predicted == true))


def f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Binary F1 of the positive class 1 (MRPC ``equivalent``, QQP ``duplicate``), as GLUE reports it:
    ``2 TP / (2 TP + FP + FN)``; 0.0 when nothing is predicted or labelled positive (scikit-learn's
    ``zero_division=0``)."""
    predicted, true = _pair(predictions, labels)
    tp = float(np.sum((predicted == 1) & (true == 1)))
    denominator = float(np.sum(true == 1)) + float(np.sum(predicted == 1))
    return 2.0 * tp / denominator if denominator else 0.0


def mcc(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (CoLA; any number of classes) from the confusion matrix; 0.0 when either side is
    constant."""
    predicted, true = _pair(predictions, labels)
    _, codes = np.unique(np.concatenate([true, predicted]), return_inverse=True)
    k = int(codes.max()) + 1
    confusion = np.bincount(codes[: true.size] * k + codes[true.size:], minlength=k * k).reshape(k, k)
    t_sum, p_sum = confusion.sum(axis=1, dtype=np.float64), confusion.sum(axis=0, dtype=np.float64)
    n_correct, n_samples = np.trace(confusion, dtype=np.float64), p_sum.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson r (STS-B); NaN when either side is constant (scipy warns), which never wins a selection."""
    return float(stats.pearsonr(predictions, labels).statistic)


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    return float(stats.spearmanr(predictions, labels).statistic)


METRICS: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(
    task: str | TaskSpec, predictions: ArrayLike, labels: ArrayLike, split: str | None = None
) -> dict[str, float]:
    """All metrics of ``task`` on one eval split, keyed as ``TaskSpec.metric_key`` names them.

    ``predictions``: for classification, class ids of shape ``(N,)`` or logits/probabilities of shape
    ``(N, num_labels)`` (arg-maxed); for regression (STS-B), scores of shape ``(N,)`` or ``(N, 1)``.
    ``split`` is required only for MNLI, whose keys say which dev set they come from:
    ``mnli_m/accuracy`` (``validation_matched``) and ``mnli_mm/accuracy`` (``validation_mismatched``).
    """
    spec = get_task(task)
    eval_split = spec.eval_split(split)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    predicted = _regression_scores(predictions) if spec.is_regression else _class_ids(predictions, spec)
    if predicted.shape != labels.shape:
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels for {spec.name}/{eval_split.name}")
    return {spec.metric_key(name, eval_split.name): METRICS[name](predicted, labels) for name in spec.metrics}


def _class_ids(predictions: ArrayLike, spec: TaskSpec) -> np.ndarray:
    array = np.asarray(predictions)
    if array.ndim == 2:
        if array.shape[1] != spec.num_labels:
            raise ValueError(
                f"logits of shape {array.shape} for {spec.name}, which has {spec.num_labels} labels "
                f"{list(spec.label_names)}; pass (N, {spec.num_labels}) logits or (N,) class ids"
            )
        return array.argmax(axis=-1)  # (N,)
    if array.ndim != 1:
        raise ValueError(f"predictions of shape {array.shape}: pass (N,) class ids or (N, num_labels) logits")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"1-D predictions for {spec.name} must be class ids, got non-integer values such as "
                f"{array[~np.isclose(array, np.round(array))][:3].tolist()}; pass (N, num_labels) logits to arg-max"
            )
        array = array.astype(np.int64)
    return array


def _regression_scores(predictions: ArrayLike) -> np.ndarray:
    array = np.asarray(predictions, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # (N, 1) -> (N,)
    if array.ndim != 1:
        raise ValueError(f"regression predictions must have shape (N,) or (N, 1), got {array.shape}")
    return array


def selection_score(task: str | TaskSpec, metrics: Mapping[str, float]) -> float:
    """The number that picks the best dev checkpoint (docs/method.md, "Budgets"): ``TaskSpec.selection_metric``."""
    spec = get_task(task)
    if spec.selection_metric not in metrics:
        raise ValueError(
            f"metrics of {spec.name} lack its selection metric {spec.selection_metric!r}; found {sorted(metrics)}"
            f"{'; evaluate validation_matched too' if spec.name == 'mnli' else ''}"
        )
    return float(metrics[spec.selection_metric])


# ---------------------------------------------------------------------------------------------- GLUE average
XTC_GLUE_TASKS = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte")  # XTC-era tables: WNLI excluded

PerTask = Literal["selection", "submetric_mean", "split_columns"]
_PER_TASK_MEANING = {
    "selection": "one number per task, its selection metric",
    "submetric_mean": "one number per task, the mean of all its reported metrics",
    "split_columns": "one number per eval split, the selection metric (MNLI-m and MNLI-mm count separately)",
}


def _task_keys(spec: TaskSpec, per_task: PerTask) -> list[str]:
    """The metric keys a task contributes to the average under ``per_task``."""
    if per_task == "selection":
        return [spec.selection_metric]
    if per_task == "submetric_mean":
        return list(spec.metric_keys)
    base = spec.selection_metric.rpartition("/")[2]
    return [spec.metric_key(base, s.name) for s in spec.eval_splits]


def _task_numbers(spec: TaskSpec, metrics: Mapping[str, float], per_task: PerTask) -> list[float]:
    keys = _task_keys(spec, per_task)
    missing = [key for key in keys if key not in metrics]
    if missing:
        raise ValueError(
            f"metrics of {spec.name} lack {missing} needed by per_task={per_task!r}; found {sorted(metrics)}"
        )
    values = [float(metrics[key]) for key in keys]
    return [float(np.mean(values))] if per_task == "submetric_mean" else values


def glue_average(
    scores_by_task: Mapping[str, Mapping[str, float]],
    per_task: PerTask = "selection",
    tasks: Sequence[str] = XTC_GLUE_TASKS,
) -> float:
    """The GLUE average under an explicit convention; state it beside every table (``describe_glue_average``).

    Default, the XTC-era convention: the plain mean over the 8 tasks without WNLI of one number per task, its
    selection metric (MNLI-m acc, QQP acc, QNLI acc, SST-2 acc, CoLA MCC, STS-B Pearson, MRPC acc, RTE acc).
    ``per_task="submetric_mean"`` first averages each task's metrics (MNLI-m/mm, QQP and MRPC acc/F1, STS-B
    Pearson/Spearman), as the GLUE leaderboard does. ``per_task="split_columns"`` averages table columns as
    BinaryBERT/BiT do: 9 numbers, MNLI-m and MNLI-mm separately. Tasks outside ``tasks`` are ignored.
    """
    _check_per_task(per_task)
    specs = [get_task(name) for name in tasks]
    missing = [spec.name for spec in specs if spec.name not in scores_by_task]
    if missing:
        raise ValueError(
            f"GLUE average over {list(tasks)} is missing {missing} (have {sorted(scores_by_task)}); evaluate them, "
            f"or pass tasks=... to average fewer and say so beside the table"
        )
    numbers = [value for spec in specs for value in _task_numbers(spec, scores_by_task[spec.name], per_task)]
    return float(np.mean(numbers))


def describe_glue_average(per_task: PerTask = "selection", tasks: Sequence[str] = XTC_GLUE_TASKS) -> str:
    """The sentence that states the average's convention under a table."""
    _check_per_task(per_task)
    specs = [get_task(name) for name in tasks]
    if per_task == "submetric_mean":
        parts = [f"{s.title} mean({', '.join(_task_keys(s, per_task))})" for s in specs]
    else:
        parts = [f"{s.title} {', '.join(_task_keys(s, per_task))}" for s in specs]
    names = {s.name for s in specs}
    excluded = [get_task(n).title for n in (*XTC_GLUE_TASKS, "wnli") if n not in names]
    return (
        f"GLUE average: plain mean over {len(specs)} tasks"
        f"{' (' + ', '.join(excluded) + ' excluded)' if excluded else ''} of {_PER_TASK_MEANING[per_task]}: "
        f"{'; '.join(parts)}."
    )


def _check_per_task(per_task: str) -> None:
    if per_task not in _PER_TASK_MEANING:
        raise ValueError(f"per_task={per_task!r} is not a GLUE average convention; use one of {get_args(PerTask)}")
