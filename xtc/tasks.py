"""The GLUE task table (``TASKS``): every fact ``xtc`` and the workflow know about a task, written once.

Which columns hold the text, the label ids, whether the task is a regression, its metrics, its eval splits, the
metric that selects the best checkpoint, where the official ``glue_data/`` TSV files keep it, its train size and its
augmentation copies. Torch-free and cheap to import (the workflow and the report read it); loading and
tokenization live in ``xtc.glue``, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypedDict

from xtc.config import GLUE_TASK_NAMES, suggest

TRAIN = "train"


class Example(TypedDict):
    """One labelled GLUE example; ``text_b`` is None for single-sentence tasks (CoLA, SST-2)."""

    text_a: str
    text_b: str | None
    label: int | float


@dataclass(frozen=True)
class EvalSplit:
    """A dev split and the prefix of its metric keys (``''``: plain keys such as ``accuracy``)."""

    name: str
    key_prefix: str = ""


@dataclass(frozen=True)
class TsvLayout:
    """Where and how the official ``glue_data/`` TSV files store a task.

    ``text_fields``/``label_field`` are header names, or 0-based column indices for the header-less CoLA.
    The number of fields per row is ``len(header)``, or ``num_fields`` without a header; MNLI's train file
    (12 columns) and dev files (16: five annotator labels) differ, so it must come from the header.
    ``file_labels`` lists the label strings of the file in label-id order; None means a float score.
    ``train_columns`` is the official train file's full header (GLUE download script), every column in order, so
    a written train file (``xtc augment``) also reads in index-based readers (TinyBERT's); None without a header.
    """

    directory: str
    files: Mapping[str, str] = field(hash=False)
    text_fields: tuple[str | int, ...]
    label_field: str | int
    file_labels: tuple[str, ...] | None
    header: bool = True
    num_fields: int | None = None
    encoding: str = "utf-8"
    train_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        assert self.header == (self.train_columns is not None), self.directory
        assert self.train_columns is None or {*self.text_fields, self.label_field} <= set(self.train_columns)


@dataclass(frozen=True)
class TaskSpec:
    """Everything ``xtc`` needs to know about one GLUE task (docs/method.md, "Budgets" and "Data augmentation").

    ``text_columns`` are the hub column names (``task_to_keys`` of ``run_glue``); ``label_names`` follow the
    hub's ``ClassLabel`` order, so label id ``i`` means ``label_names[i]``; regression tasks have none.
    ``metrics`` are names from ``xtc.metrics.METRICS``; each eval split reports all of them under
    ``metric_key(metric, split)``, and ``selection_metric`` is the key that picks the best dev checkpoint.
    ``train_size`` counts the official train split's examples (budgets in steps derive from it); ``aug_copies`` is
    TinyBERT's number of augmented copies per train example (WNLI, not in TinyBERT's table, is the smallest task
    and gets the 30 of every task under 10k examples).
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    selection_metric: str
    tsv: TsvLayout
    hub_config: str
    train_size: int
    aug_copies: int
    is_regression: bool = False
    eval_splits: tuple[EvalSplit, ...] = (EvalSplit("validation"),)

    def __post_init__(self) -> None:
        assert len(self.text_columns) in (1, 2), self.name
        assert self.is_regression == (not self.label_names), self.name
        assert len(self.tsv.text_fields) == len(self.text_columns), self.name
        assert set(self.tsv.files) == set(self.splits), self.name
        assert self.selection_metric in self.metric_keys, self.name

    @property
    def num_labels(self) -> int:
        """Width of the classifier head: 1 output for regression (STS-B)."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def title(self) -> str:
        """The usual spelling (``SST-2``, ``MNLI``): the official folder names are exactly that."""
        return self.tsv.directory

    @property
    def splits(self) -> tuple[str, ...]:
        return (TRAIN, *(s.name for s in self.eval_splits))

    @property
    def metric_keys(self) -> tuple[str, ...]:
        """Every key ``compute_metrics`` reports over all eval splits of this task."""
        return tuple(self.metric_key(m, s.name) for s in self.eval_splits for m in self.metrics)

    def eval_split(self, split: str | None = None) -> EvalSplit:
        """The named eval split; None is allowed only when the task has a single one."""
        if split is None:
            if len(self.eval_splits) > 1:
                names = [s.name for s in self.eval_splits]
                raise ValueError(f"task {self.name!r} has {len(names)} eval splits {names}; pass split=one of them")
            return self.eval_splits[0]
        for candidate in self.eval_splits:
            if candidate.name == split:
                return candidate
        self.check_split(split)
        raise ValueError(f"split {split!r} of task {self.name!r} is not an eval split; use one of {self.splits[1:]}")

    def metric_key(self, metric: str, split: str | None = None) -> str:
        prefix = self.eval_split(split).key_prefix
        return f"{prefix}/{metric}" if prefix else metric

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r}{suggest(split, self.splits) or ';'} its splits: "
                f"{list(self.splits)} (GLUE test labels are not public, so there is no test split)"
            )
        return split


_TRAIN_DEV = MappingProxyType({TRAIN: "train.tsv", "validation": "dev.tsv"})
_BINARY = ("0", "1")  # files that store the hub's label ids directly
_NLI2 = ("entailment", "not_entailment")
_MNLI_LABELS = ("entailment", "neutral", "contradiction")
_PAIR = ("sentence1", "sentence2")

TASKS: Mapping[str, TaskSpec] = MappingProxyType({spec.name: spec for spec in (
    TaskSpec(
        "cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), "mcc", hub_config="cola",
        train_size=8551, aug_copies=30,
        # no header: source, label, original label ('*' or empty), sentence
        tsv=TsvLayout("CoLA", _TRAIN_DEV, (3,), 1, _BINARY, header=False, num_fields=4),
    ),
    TaskSpec(
        "sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy", hub_config="sst2",
        train_size=67349, aug_copies=20,
        tsv=TsvLayout("SST-2", _TRAIN_DEV, ("sentence",), "label", _BINARY, train_columns=("sentence", "label")),
    ),
    TaskSpec(
        "mrpc", _PAIR, ("not_equivalent", "equivalent"), ("accuracy", "f1"), "accuracy", hub_config="mrpc",
        train_size=3668, aug_copies=30,
        tsv=TsvLayout("MRPC", _TRAIN_DEV, ("#1 String", "#2 String"), "Quality", _BINARY, encoding="utf-8-sig",
                      train_columns=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")),
    ),
    TaskSpec(
        "stsb", _PAIR, (), ("pearson", "spearman"), "pearson", hub_config="stsb", is_regression=True,
        train_size=5749, aug_copies=30,
        tsv=TsvLayout("STS-B", _TRAIN_DEV, _PAIR, "score", None, train_columns=(
            "index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")),
    ),
    TaskSpec(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"), "accuracy",
        hub_config="qqp", train_size=363846, aug_copies=10,
        tsv=TsvLayout("QQP", _TRAIN_DEV, ("question1", "question2"), "is_duplicate", _BINARY,
                      train_columns=("id", "qid1", "qid2", "question1", "question2", "is_duplicate")),
    ),
    TaskSpec(
        "mnli", ("premise", "hypothesis"), _MNLI_LABELS, ("accuracy",), "mnli_m/accuracy", hub_config="mnli",
        train_size=392702, aug_copies=10,
        eval_splits=(EvalSplit("validation_matched", "mnli_m"), EvalSplit("validation_mismatched", "mnli_mm")),
        tsv=TsvLayout(
            "MNLI",
            MappingProxyType(
                {TRAIN: "train.tsv", "validation_matched": "dev_matched.tsv",
                 "validation_mismatched": "dev_mismatched.tsv"}
            ),
            _PAIR, "gold_label", _MNLI_LABELS,
            train_columns=("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                           "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"),
        ),
    ),
    TaskSpec(
        "qnli", ("question", "sentence"), _NLI2, ("accuracy",), "accuracy", hub_config="qnli",
        train_size=104743, aug_copies=20,
        tsv=TsvLayout("QNLI", _TRAIN_DEV, ("question", "sentence"), "label", _NLI2,
                      train_columns=("index", "question", "sentence", "label")),
    ),
    TaskSpec(
        "rte", _PAIR, _NLI2, ("accuracy",), "accuracy", hub_config="rte", train_size=2490, aug_copies=30,
        tsv=TsvLayout("RTE", _TRAIN_DEV, _PAIR, "label", _NLI2, train_columns=("index", *_PAIR, "label")),
    ),
    TaskSpec(
        "wnli", _PAIR, ("not_entailment", "entailment"), ("accuracy",), "accuracy", hub_config="wnli",
        train_size=635, aug_copies=30,
        tsv=TsvLayout("WNLI", _TRAIN_DEV, _PAIR, "label", _BINARY, train_columns=("index", *_PAIR, "label")),
    ),
)})
assert tuple(TASKS) == GLUE_TASK_NAMES


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The table row of a task name (a ``TaskSpec`` passes through)."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}{suggest(task, TASKS) or ';'} known tasks: {', '.join(TASKS)}")
    return TASKS[task]


