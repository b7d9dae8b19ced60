"""GLUE as one table (``TASKS``), loading from the hub or a local ``glue_data/`` folder, and tokenization.

Every other module looks task facts up here (style habit 9): which columns hold the text, the label ids,
whether the task is a regression, its metrics, its eval splits and which metric selects the best checkpoint.
Both sources yield the same plain ``Example`` dicts (``text_a``, ``text_b`` or None, ``label``) with the label
ids of the hub copy ``nyu-mll/glue``, so a run gives the same numbers whichever source it read.

Importing this module is cheap and torch-free (``metrics.py`` and the aggregation scripts use the table);
``datasets`` and ``torch`` are imported only by the functions that need them.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np

from xtc.config import GLUE_TASK_NAMES, suggest
from xtc.sources import HUB_DATASET, check_data

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GLUE_DIR_ENV = "GLUE_DIR"
TRAIN = "train"
_GET_GLUE = (
    f"download GLUE with the official download_glue_data.py script and pass data_dir=/path/to/glue_data "
    f"(or set {GLUE_DIR_ENV}), or leave data_dir unset to read the hub copy {HUB_DATASET}"
)

T = TypeVar("T")


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
    """

    directory: str
    files: Mapping[str, str] = field(hash=False)
    text_fields: tuple[str | int, ...]
    label_field: str | int
    file_labels: tuple[str, ...] | None
    header: bool = True
    num_fields: int | None = None
    encoding: str = "utf-8"


@dataclass(frozen=True)
class TaskSpec:
    """Everything ``xtc`` needs to know about one GLUE task (reference sections 5 and 6).

    ``text_columns`` are the hub column names (``task_to_keys`` of ``run_glue``); ``label_names`` follow the
    hub's ``ClassLabel`` order, so label id ``i`` means ``label_names[i]``; regression tasks have none.
    ``metrics`` are names from ``xtc.metrics.METRICS``; each eval split reports all of them under
    ``metric_key(metric, split)``, and ``selection_metric`` is the key that picks the best dev checkpoint.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    selection_metric: str
    tsv: TsvLayout
    hub_config: str
    is_regression: bool = False
    eval_splits: tuple[EvalSplit, ...] = (EvalSplit("validation"),)
    # examples in the official train split, and TinyBERT's augmented copies per example (XTC's DA recipe)
    train_size: int = field(default=0, kw_only=True)
    aug_copies: int = field(default=0, kw_only=True)

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
        tsv=TsvLayout("SST-2", _TRAIN_DEV, ("sentence",), "label", _BINARY),
    ),
    TaskSpec(
        "mrpc", _PAIR, ("not_equivalent", "equivalent"), ("accuracy", "f1"), "accuracy", hub_config="mrpc",
        train_size=3668, aug_copies=30,
        tsv=TsvLayout("MRPC", _TRAIN_DEV, ("#1 String", "#2 String"), "Quality", _BINARY, encoding="utf-8-sig"),
    ),
    TaskSpec(
        "stsb", _PAIR, (), ("pearson", "spearman"), "pearson", hub_config="stsb", is_regression=True,
        train_size=5749, aug_copies=30,
        tsv=TsvLayout("STS-B", _TRAIN_DEV, _PAIR, "score", None),
    ),
    TaskSpec(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"), "accuracy",
        train_size=363846, aug_copies=10,
        hub_config="qqp", tsv=TsvLayout("QQP", _TRAIN_DEV, ("question1", "question2"), "is_duplicate", _BINARY),
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
        ),
    ),
    TaskSpec(
        "qnli", ("question", "sentence"), _NLI2, ("accuracy",), "accuracy", hub_config="qnli",
        train_size=104743, aug_copies=20,
        tsv=TsvLayout("QNLI", _TRAIN_DEV, ("question", "sentence"), "label", _NLI2),
    ),
    TaskSpec(
        "rte", _PAIR, _NLI2, ("accuracy",), "accuracy", hub_config="rte",
        train_size=2490, aug_copies=30,
        tsv=TsvLayout("RTE", _TRAIN_DEV, _PAIR, "label", _NLI2),
    ),
    TaskSpec(
        "wnli", _PAIR, ("not_entailment", "entailment"), ("accuracy",), "accuracy", hub_config="wnli",
        train_size=635, aug_copies=30,
        tsv=TsvLayout("WNLI", _TRAIN_DEV, _PAIR, "label", _BINARY),
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


# ---------------------------------------------------------------------------------------------- loading
def load_split(
    task: str | TaskSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Load a split from ``data_dir`` (else ``$GLUE_DIR``, else the hub), optionally a seeded subset of it."""
    spec = get_task(task)
    root = data_dir if data_dir is not None else os.environ.get(GLUE_DIR_ENV) or None
    examples = load_local(spec, root, split) if root is not None else load_hub(spec, split)
    return subsample(examples, max_examples, seed)


def subsample(examples: Sequence[T], max_examples: int | None, seed: int = 0) -> list[T]:
    """A seeded random subset of ``max_examples`` items, kept in file order; everything if it is not smaller.

    The same ``(len, max_examples, seed)`` always picks the same items, so a short debug run or a budget
    study sees the same data on every machine.
    """
    if max_examples is None:
        return list(examples)
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples={max_examples!r} must be a positive integer, or None for the whole split")
    if max_examples >= len(examples):
        return list(examples)
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), size=max_examples, replace=False))
    return [examples[i] for i in keep]


def load_local(task: str | TaskSpec, data_dir: str | os.PathLike[str], split: str) -> list[Example]:
    """Read one split from the official ``glue_data/`` layout (``RTE/train.tsv``, ``MNLI/dev_matched.tsv``...)."""
    spec = get_task(task)
    path = _task_file(spec, Path(data_dir), spec.check_split(split))
    examples = read_tsv(spec, path)
    log.info("loaded %d examples of %s/%s from %s", len(examples), spec.name, split, path)
    return examples


def _task_file(spec: TaskSpec, data_dir: Path, split: str) -> Path:
    if not data_dir.is_dir():
        raise ValueError(f"GLUE data_dir {str(data_dir)!r} is not a folder; {_GET_GLUE}")
    folder = data_dir / spec.tsv.directory
    if not folder.is_dir():
        raise ValueError(
            f"no {spec.tsv.directory!r} folder for task {spec.name!r} in {data_dir}: expected {folder} "
            f"(the glue_data/ layout: {spec.tsv.directory}/{spec.tsv.files[TRAIN]}); {_GET_GLUE}"
        )
    path = folder / spec.tsv.files[split]
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.tsv"))
        raise ValueError(
            f"{path} not found: split {split!r} of {spec.name!r} is read from {spec.tsv.files[split]!r} and "
            f"{folder} holds only {present}; {_GET_GLUE}"
        )
    return path


def read_tsv(task: str | TaskSpec, path: str | os.PathLike[str]) -> list[Example]:
    """Parse one file in the task's official layout strictly (also an augmented train file in that layout).

    Quotes are literal text (``QUOTE_NONE``): GLUE texts contain unbalanced ``"`` and a quote-aware reader
    silently merges rows. Every row must have all its fields; blank lines are skipped.
    """
    spec, path = get_task(task), Path(path)
    layout = spec.tsv
    label_ids = {label: i for i, label in enumerate(layout.file_labels)} if layout.file_labels else None
    examples: list[Example] = []
    with path.open(encoding=layout.encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.header:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty; expected a header line and the rows of {spec.title}")
            num_fields = len(header)
            text_idx = [_column(header, name, path) for name in layout.text_fields]
            label_idx = _column(header, layout.label_field, path)
        else:
            num_fields = layout.num_fields
            text_idx, label_idx = list(layout.text_fields), layout.label_field
        for row in reader:
            if not row:
                continue
            if len(row) != num_fields:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected {num_fields} tab-separated fields, found {len(row)}; "
                    f"the official {spec.title} files have {num_fields} (was the file edited or re-saved?)"
                )
            texts = [row[i] for i in text_idx]
            label = _parse_label(row[label_idx], label_ids, path, reader.line_num)
            examples.append(Example(text_a=texts[0], text_b=texts[1] if len(texts) == 2 else None, label=label))
    return examples


def _column(header: list[str], name: str | int, path: Path) -> int:
    if name not in header:
        raise ValueError(
            f"{path}: header {header} has no column {name!r}; expected the official GLUE layout "
            f"(a UTF-8 BOM or a re-saved file can change the header)"
        )
    return header.index(name)


def _parse_label(raw: str, label_ids: dict[str, int] | None, path: Path, line: int) -> int | float:
    if label_ids is None:
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(f"{path}, line {line}: label {raw!r} is not a number; scores are floats such as '3.800'")
        return score
    if raw not in label_ids:
        raise ValueError(f"{path}, line {line}: unknown label {raw!r}; allowed labels: {list(label_ids)}")
    return label_ids[raw]


def load_hub(task: str | TaskSpec, split: str) -> list[Example]:
    """Read one split of ``nyu-mll/glue`` (labels there already use the ids of ``TaskSpec.label_names``)."""
    spec = get_task(task)
    spec.check_split(split)
    check_data(None, [spec.hub_config], key="data_dir")  # offline: say what to set, before datasets retries
    try:
        import datasets

        dataset = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=split)
    except Exception as err:  # offline, hub outage, cache miss: the user's fix is the same
        raise RuntimeError(
            f"could not load {spec.name}/{split} from the Hugging Face hub ({HUB_DATASET}, config "
            f"{spec.hub_config!r}): {err}. Without network access, set data_dir (or {GLUE_DIR_ENV}) to a local "
            f"glue_data/ folder with {spec.tsv.directory}/{spec.tsv.files[split]}"
        ) from err
    columns = dataset.select_columns([*spec.text_columns, "label"]).to_dict()
    cast = float if spec.is_regression else int
    texts_b = columns[spec.text_columns[1]] if spec.is_pair else [None] * len(columns["label"])
    examples = [
        Example(text_a=a, text_b=b, label=cast(label))
        for a, b, label in zip(columns[spec.text_columns[0]], texts_b, columns["label"], strict=True)
    ]
    log.info("loaded %d examples of %s/%s from the hub", len(examples), spec.name, split)
    return examples


# ---------------------------------------------------------------------------------------------- tokenization
def tokenize(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int = 1000
) -> list[dict[str, Any]]:
    """Token ids (truncated to ``max_length``, unpadded) plus ``labels``: float for regression, else int.

    Padding is left to ``PaddingCollator`` so each batch is only as long as its longest example.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length={max_length!r} must be an integer >= 2 ([CLS] and [SEP]); XTC uses 128")
    kinds = {example["text_b"] is None for example in examples}
    if len(kinds) > 1:
        raise ValueError("examples mix single sentences and sentence pairs; tokenize one task's split at a time")
    features: list[dict[str, Any]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        texts_b = None if kinds == {True} else [e["text_b"] for e in chunk]
        encoded = tokenizer([e["text_a"] for e in chunk], texts_b, truncation=True, max_length=max_length)
        for i, example in enumerate(chunk):
            item = {key: encoded[key][i] for key in encoded.keys()}
            label = example["label"]
            item["labels"] = float(label) if isinstance(label, (float, np.floating)) else int(label)
            features.append(item)
    return features


@dataclass(frozen=True)
class PaddingCollator:
    """Dynamic padding: right-pads a batch to its longest example and returns tensors.

    ``labels`` become float32 when any is a float (STS-B regression, MSE loss), else int64 (cross-entropy).
    Frozen and picklable, so it works in ``DataLoader`` worker processes.
    """

    pad_token_id: int = 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {}
        for key, pad in (("input_ids", self.pad_token_id), ("token_type_ids", 0), ("attention_mask", 0)):
            if key in features[0]:
                rows = [list(f[key]) + [pad] * (longest - len(f[key])) for f in features]
                batch[key] = torch.tensor(rows, dtype=torch.long)  # (B, T)
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            regression = any(isinstance(label, (float, np.floating)) for label in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)  # (B,)
        return batch


def make_collator(tokenizer: PreTrainedTokenizerBase) -> PaddingCollator:
    """The collator for a tokenizer's padding id."""
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    return PaddingCollator(pad_token_id=int(tokenizer.pad_token_id))
