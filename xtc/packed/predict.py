"""``xtc predict``: labels (or scores) of sentences read from a TSV file or stdin, one output line per input line.

A packed checkpoint runs on the integer CPU engine by default (``xtc.packed.load(path, engine="int8")``); a model or
run directory runs its float (fake-quant) model. Input: tab-separated lines of one text (single-sentence tasks) or
two (pairs), without a header; or, with ``columns``, a header line naming the text columns to read (e.g.
``sentence`` of a GLUE SST-2 file). Quotes are literal text, as in GLUE files. Examples are batched by length (less
padding) and written back in input order.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import torch

log = logging.getLogger(__name__)


def read_texts(lines: Iterable[str], columns: Sequence[str] | None = None,
               source: str = "input") -> list[tuple[str, str | None]]:
    """``(text_a, text_b or None)`` per non-blank line; all lines single sentences or all pairs."""
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    index: list[int] | None = None
    if columns:
        if not 1 <= len(columns) <= 2:
            raise ValueError(f"--columns names {len(columns)} columns; give one (sentence) or two (a pair)")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{source} is empty; expected a header line naming the columns {list(columns)}")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{source}: header {header} has no column {missing[0]!r}; pass --columns with names "
                             "from the header, or drop --columns for header-less lines of 1 or 2 texts")
        index = [header.index(c) for c in columns]
    texts: list[tuple[str, str | None]] = []
    for row in reader:
        if not row or row == [""]:
            continue
        if index is not None:
            if len(row) <= max(index):
                raise ValueError(f"{source}, line {reader.line_num}: {len(row)} fields, but column "
                                 f"{columns[index.index(max(index))]!r} is field {max(index) + 1}")
            fields = [row[i] for i in index]
        else:
            fields = row
        if len(fields) > 2:
            raise ValueError(f"{source}, line {reader.line_num}: {len(fields)} tab-separated fields; a line holds "
                             "one text or a pair: name the text columns with --columns (the file needs a header)")
        texts.append((fields[0], fields[1] if len(fields) == 2 else None))
    if len({b is None for _, b in texts}) > 1:
        raise ValueError(f"{source} mixes single sentences and sentence pairs; give one kind per call")
    return texts


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


def load_for_prediction(model: str | Path, engine: str = "int8"):
    """``(model, tokenizer_dir)``: a packed file on ``engine``, else a model or run directory (float)."""
    from xtc.checkpoint import load_model_dir
    from xtc.study.rundir import model_dir

    path = Path(model)
    if path.is_file():
        from xtc.packed import load

        return load(path, engine=engine), path.parent
    if not path.exists():
        raise ValueError(f"--model {path} does not exist; pass a packed .safetensors file, a model dir or a run dir")
    if engine != "float":
        log.info("%s is not a packed checkpoint: running its float model (the integer engine serves packed files)",
                 path)
    path = model_dir(path)
    return load_model_dir(path).eval(), path


def run(model: str | Path, input: str = "-", columns: Sequence[str] | None = None, scores: bool = False,
        batch_size: int = 32, max_length: int = 128, engine: str = "int8", tokenizer: str | None = None,
        out: TextIO | None = None) -> list[str]:
    """The whole command: read, predict, write one line per example to ``out`` (stdout); returns the lines."""
    from xtc.checkpoint import load_tokenizer

    out = out or sys.stdout
    if input == "-":
        texts = read_texts(sys.stdin, columns, "stdin")
    else:
        if not Path(input).is_file():
            raise ValueError(f"--input {input} is not a file; pass a TSV file, or '-' to read stdin")
        with open(input, encoding="utf-8", newline="") as handle:
            texts = read_texts(handle, columns, input)
    loaded, tokenizer_dir = load_for_prediction(model, engine)
    logits = predict_logits(loaded, load_tokenizer(tokenizer or tokenizer_dir), texts, batch_size, max_length)
    lines = format_rows(logits, dict(loaded.config.id2label), scores)
    for line in lines:
        out.write(line + "\n")
    return lines
