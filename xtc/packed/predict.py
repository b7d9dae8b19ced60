"""``xtc predict``: labels (or scores) of sentences read from a TSV file or stdin, one output line per input line.

A packed checkpoint runs on the integer CPU engine by default (``xtc.packed.load(path, engine="int8")``); a model or
run directory runs its float (fake-quant) model.

Input is read as the model's task reads it (``--task``, or the task its packed header or run directory records):
a GLUE file in the official layout of ``xtc.tasks`` (a header naming the text columns, as SST-2's ``dev.tsv`` and
``test.tsv`` or MRPC's five columns; CoLA's header-less four columns), or plain lines of one text (single-sentence
tasks) or two (pairs). Pair lines for a single-sentence task, and single lines for a pair task, are refused; so are
two-field lines when the task is unknown (a sentence pair, or a sentence and its label?): ``--task`` or
``--columns`` says which. ``--columns`` names the text columns of a header line. Quotes are literal text, as in
GLUE files. Every input and setting is checked before the model is loaded; examples are batched by length (less
padding) and written back in input order.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from xtc.tasks import TASKS, TaskSpec, get_task

log = logging.getLogger(__name__)

Texts = list[tuple[str, str | None]]
DEFAULT_LENGTH = 128  # tokens, XTC's; fewer when the model has fewer positions
# The text columns' header names of every GLUE file layout (train/dev in the glue_data/ layout, and test files).
_HEADER_NAMES = frozenset(name for spec in TASKS.values()
                          for name in (*spec.text_columns, *(f for f in spec.tsv.text_fields if isinstance(f, str))))


# ---------------------------------------------------------------------------------------------- reading the input
def _rows(reader: Any, source: str) -> Iterator[list[str]]:
    """Non-blank rows; a NUL byte (a UTF-16 or binary file) or a csv error (a field over csv's size limit) is one
    line naming the line."""
    try:
        for row in reader:
            if any("\x00" in field for field in row):
                raise ValueError(f"{source}, line {reader.line_num}: a NUL byte, which no text holds (a UTF-16 or "
                                 "binary file?); give a UTF-8 text file of tab-separated sentences")
            if row and row != [""]:
                yield row
    except csv.Error as err:
        raise ValueError(f"{source}, line {reader.line_num}: {err} (csv); give a UTF-8 text file of tab-separated "
                         f"sentences") from None


def _layout(first: list[str], columns: Sequence[str] | None, spec: TaskSpec | None,
            source: str) -> tuple[list[int] | None, int | None, bool]:
    """``(text column indices or None for plain lines, fields per row or None, first row is a header)``."""
    if columns:
        if not 1 <= len(columns) <= 2:
            raise ValueError(f"--columns names {len(columns)} columns; give one (sentence) or two (a pair)")
        if spec is not None and len(columns) != len(spec.text_columns):
            raise ValueError(f"--columns names {len(columns)} text column(s), but the model's task {spec.name!r} "
                             f"reads {len(spec.text_columns)} ({', '.join(spec.text_columns)}); fix --columns")
        missing = [c for c in columns if c not in first]
        if missing:
            raise ValueError(f"{source}: header {first} has no column {missing[0]!r}; pass --columns with names "
                             "from the header, or drop --columns for header-less lines of 1 or 2 texts")
        return [first.index(c) for c in columns], None, True
    if spec is None:
        return None, None, False
    layout = spec.tsv
    for names in ([f for f in layout.text_fields if isinstance(f, str)], list(spec.text_columns)):
        if names and all(name in first for name in names):  # a GLUE file with a header (train, dev or test)
            return [first.index(name) for name in names], len(first), True
    if (not layout.header and len(first) == layout.num_fields and layout.file_labels
            and first[layout.label_field] in layout.file_labels):  # CoLA's header-less train/dev files
        return [int(f) for f in layout.text_fields], layout.num_fields, False
    return None, None, False


def _plain(row: list[str], spec: TaskSpec | None, source: str, line: int) -> list[str]:
    """A plain line's texts, checked against the task (pair or single sentence)."""
    if len(row) > 2:
        raise ValueError(f"{source}, line {line}: {len(row)} tab-separated fields; a line holds one text or a pair: "
                         f"name the text columns with --columns (the file needs a header){_task_hint(spec)}")
    if spec is None:
        if len(row) == 2:
            raise ValueError(
                f"{source}, line {line}: 2 tab-separated fields, and the model records no task, so they could be a "
                "sentence pair or a sentence and its label (as in SST-2's dev.tsv); pass --task (e.g. --task mrpc "
                "or --task sst2), or --columns naming the header's text columns")
        return row
    if len(row) != len(spec.text_columns):
        kind = "a sentence pair" if len(row) == 2 else "one sentence"
        want = "sentence pairs (two tab-separated texts a line)" if spec.is_pair else "one sentence a line"
        raise ValueError(f"{source}, line {line}: {kind}, but the model's task {spec.name!r} reads {want}; give it "
                         f"that, or name the text column(s) of a header with --columns")
    return row


def _task_hint(spec: TaskSpec | None) -> str:
    return "" if spec is None else f", or give a GLUE file of {spec.name!r} in its official layout"


def read_texts(lines: Iterable[str], columns: Sequence[str] | None = None, source: str = "input",
               task: str | TaskSpec | None = None) -> Texts:
    """``(text_a, text_b or None)`` per example: all single sentences or all pairs, as ``task`` reads them."""
    spec = get_task(task) if task is not None else None
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = _rows(reader, source)
    first = next(rows, None)
    if first is None:
        if columns:
            raise ValueError(f"{source} is empty; expected a header line naming the columns {list(columns)}")
        return []
    index, width, header = _layout(first, columns, spec, source)
    if index is None and spec is None and len(first) == 1 and first[0] in _HEADER_NAMES:
        raise ValueError(f"{source}, line 1: {first[0]!r} looks like a GLUE header; pass --columns {first[0]} to "
                         "read that column, or --task")
    texts: Texts = []
    for row in ([] if header else [first]), rows:
        for fields in row:
            line = reader.line_num
            if index is None:
                fields = _plain(fields, spec, source, line)
            else:
                if width is not None and len(fields) != width:
                    raise ValueError(f"{source}, line {line}: {len(fields)} tab-separated fields, but its layout has "
                                     f"{width}; was the file edited?")
                if len(fields) <= max(index):
                    raise ValueError(f"{source}, line {line}: {len(fields)} fields, but a text column is field "
                                     f"{max(index) + 1}")
                fields = [fields[i] for i in index]
            texts.append((fields[0], fields[1] if len(fields) == 2 else None))
    if len({b is None for _, b in texts}) > 1:
        raise ValueError(f"{source} mixes single sentences and sentence pairs; give one kind per call")
    return texts


# ---------------------------------------------------------------------------------------------- the model
def predict_logits(model, tokenizer, texts: Sequence[tuple[str, str | None]], batch_size: int = 32,
                   max_length: int = 128) -> torch.Tensor:
    """``(N, num_labels)`` logits in input order; batches of similar length."""
    from xtc.collate import make_collator

    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} must be at least 1")
    if not texts:
        return torch.empty(0, model.config.num_labels)
    pairs = texts[0][1] is not None
    encoded = tokenizer([a for a, _ in texts], [b for _, b in texts] if pairs else None, truncation=True,
                        max_length=max_length)
    features = [{k: encoded[k][i] for k in encoded.keys()} for i in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda i: len(features[i]["input_ids"]))
    collate = make_collator(tokenizer)
    logits = torch.empty(len(texts), model.config.num_labels)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            logits[chunk] = model(**collate([features[i] for i in chunk])).logits.float()
    return logits


def format_rows(logits: torch.Tensor, id2label: dict[int, str], scores: bool) -> list[str]:
    """One line per example: its label name, or with ``scores`` its class probabilities (a regression's score)."""
    if logits.shape[1] == 1:
        return [f"{float(v):.6g}" for v in logits[:, 0]]
    if scores:
        return ["\t".join(f"{p:.6f}" for p in row) for row in torch.softmax(logits, dim=-1).tolist()]
    return [str(id2label.get(int(i), int(i))) for i in logits.argmax(dim=-1)]


def describe(model: str | Path) -> dict[str, Any]:
    """What predict needs to know before loading: ``path`` (a packed file, or the model dir), ``packed``, the HF
    ``config`` dict, the recorded ``task`` (None when nothing records it) and the ``tokenizer`` dir. Cheap: the
    packed file's header or the dir's JSON files, no weights."""
    from xtc.study.rundir import model_dir, run_config_of

    path = Path(model)
    if path.is_file():
        from xtc.packed.format import read_header

        header = read_header(path)
        recipe = header.get("recipe") or {}
        return {"path": path, "packed": True, "config": header["model_config"], "tokenizer": path.parent,
                "task": (recipe.get("data") or {}).get("task")}
    if not path.exists():
        raise ValueError(f"--model {path} does not exist; pass a packed .safetensors file, a model dir or a run dir")
    directory = model_dir(path)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"--model {path} is not a model directory (no config.json); pass a packed .safetensors "
                         "file, a model dir or a run dir")
    run_config = run_config_of(path) or {}
    return {"path": directory, "packed": False, "config": json.loads(config_file.read_text()),
            "tokenizer": directory, "task": run_config.get("recipe", {}).get("data", {}).get("task")}


def resolve_task(task: str | None, recorded: str | None, model: str | Path) -> TaskSpec | None:
    """``--task``, checked against the task the model records (one of them, or neither: None)."""
    if task is not None and recorded is not None and get_task(task).name != recorded:
        raise ValueError(f"--task {task} contradicts the model {model}, which was trained on {recorded!r} (its "
                         "recipe); drop --task")
    name = task if task is not None else recorded
    return get_task(name) if name is not None else None


def check_settings(info: dict[str, Any], spec: TaskSpec | None, batch_size: int, max_length: int | None) -> int:
    """Batch size, sequence length and task against the model's config, before it is loaded; returns the sequence
    length (None: 128, or the model's positions when fewer)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be at least 1")
    config = info["config"]
    positions = config.get("max_position_embeddings")
    if max_length is None:
        max_length = min(DEFAULT_LENGTH, positions or DEFAULT_LENGTH)
    if max_length < 2 or (positions is not None and max_length > positions):
        bound = f" and at most the model's max_position_embeddings={positions}" if positions is not None else ""
        raise ValueError(f"--max-seq-length {max_length} must be at least 2 ([CLS] and [SEP]){bound}; "
                         f"e.g. --max-seq-length {min(128, positions or 128)}")
    labels = len(config.get("id2label") or {}) or config.get("num_labels")
    if spec is not None and labels is not None and labels != spec.num_labels:
        raise ValueError(f"the model {info['path']} has {labels} output(s) but task {spec.name!r} has "
                         f"{spec.num_labels}; pass the model's own task with --task")
    return max_length


def load_tokenizer_for(info: dict[str, Any], tokenizer: str | None):
    """The tokenizer next to the model (or ``--tokenizer``); a missing one is one line naming the fix."""
    from xtc.checkpoint import load_tokenizer

    where = Path(tokenizer) if tokenizer else info["tokenizer"]
    try:
        return load_tokenizer(where)
    except (OSError, ValueError) as err:
        raise ValueError(f"no usable tokenizer in {where} ({type(err).__name__}); copy the export's whole folder "
                         "(model.xtc.safetensors and its tokenizer files), or pass --tokenizer DIR") from None


def load_for_prediction(info: dict[str, Any], engine: str = "int8"):
    """The model: a packed file on ``engine``, else a model or run directory (float)."""
    from xtc.checkpoint import load_model_dir

    if info["packed"]:
        from xtc.packed import load

        return load(info["path"], engine=engine)
    if engine != "float":
        log.info("%s is not a packed checkpoint: running its float model (the integer engine serves packed files)",
                 info["path"])
    return load_model_dir(info["path"]).eval()


def run(model: str | Path, input: str = "-", columns: Sequence[str] | None = None, scores: bool = False,
        batch_size: int = 32, max_length: int | None = None, engine: str = "int8", tokenizer: str | None = None,
        out: TextIO | None = None, task: str | None = None) -> list[str]:
    """The whole command: read, predict, write one line per example to ``out`` (stdout); returns the lines."""
    out = out or sys.stdout
    info = describe(model)
    spec = resolve_task(task, info["task"], model)
    max_length = check_settings(info, spec, batch_size, max_length)
    if input == "-":
        texts = read_texts(sys.stdin, columns, "stdin", spec)
    else:
        if not Path(input).is_file():
            raise ValueError(f"--input {input} is not a file; pass a TSV file, or '-' to read stdin")
        with open(input, encoding="utf-8-sig", newline="") as handle:
            texts = read_texts(handle, columns, input, spec)
    tok = load_tokenizer_for(info, tokenizer)
    loaded = load_for_prediction(info, engine)
    logits = predict_logits(loaded, tok, texts, batch_size, max_length)
    lines = format_rows(logits, dict(loaded.config.id2label), scores)
    for line in lines:
        out.write(line + "\n")
    return lines
