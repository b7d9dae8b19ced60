"""GLUE loading from the hub or a local ``glue_data/`` folder, and tokenization.

The task table (``TASKS``, ``TaskSpec``, ``get_task``) lives in ``xtc.tasks`` and batch padding in ``xtc.collate``;
every module imports them from there. Both sources yield the same plain ``Example`` dicts (``text_a``, ``text_b`` or None, ``label``) with the label
ids of the hub copy ``nyu-mll/glue``, so a run gives the same numbers whichever source it read.

Importing this module is cheap and torch-free (``metrics.py`` and the aggregation scripts use the table);
``datasets`` and ``torch`` are imported only by the functions that need them.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from xtc.sources import HUB_DATASET, check_data
from xtc.tasks import TRAIN, Example, TaskSpec, get_task

__all__ = ["load_split", "subsample", "load_local", "read_tsv", "load_hub", "tokenize"]

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GLUE_DIR_ENV = "GLUE_DIR"
_GET_GLUE = (
    f"download GLUE with the official download_glue_data.py script and pass data_dir=/path/to/glue_data "
    f"(or set {GLUE_DIR_ENV}), or leave data_dir unset to read the hub copy {HUB_DATASET}"
)

T = TypeVar("T")


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

    Padding is left to ``PaddingCollator`` (``data.padding``: to ``max_length`` or to each batch's longest).
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
