"""TinyBERT-style data augmentation (docs/method.md, "Data augmentation"; TinyBERT's ``data_augmentation.py``).

XTC's best 1-bit students distil on an augmented training set: each example gets ``n_copies`` noisy copies in
which every content word is, with probability ``p`` (0.4), replaced by one of its top ``k`` (15) candidates.
A word that is one wordpiece takes its candidates from a masked LM, as in TinyBERT: the MLM input is
``[CLS] sentence-with-the-word-masked [SEP] original-sentence [SEP]`` (segments 0 and 1), so the prediction
sees the word it replaces. A word of several wordpieces takes its GloVe nearest neighbours (cosine), or is kept
when no GloVe file is given. Stop-words and words that are not purely ``[a-z]`` (after lowercasing and accent
stripping: numbers, punctuation, names with digits) are never replaced. Labels are kept.

Candidates depend only on the original sentence, so they are computed once per distinct sentence (one MLM
row per candidate word, rows of many sentences batched into one forward) and reused for all copies.

Deviations from TinyBERT, on purpose:
- exactly ``1 + n_copies`` rows per example (TinyBERT drops duplicate copies, so its count varies);
- a pair example's copies augment both sentences, each on its own (TinyBERT writes the copies of sentence A,
  then those of sentence B paired with the *last* copy of A);
- the MLM candidates exclude the word itself, special tokens and ``[unusedN]``-style placeholders, besides the
  ``##`` pieces TinyBERT drops; the top ``k`` is taken first, then filtered, so a word may have fewer than ``k``;
- replacements are spliced into the original text (its case, spacing and punctuation kept) instead of
  re-joining lowercased basic tokens with spaces, so ``p = 0`` gives copies identical to the original.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from xtc.atomic import atomic_path
from xtc.config import AugmentConfig
from xtc.glove import GloVe
from xtc.tasks import TASKS, Example, TaskSpec, get_task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Copies per training example (TinyBERT / XTC): ``TaskSpec.aug_copies`` in ``xtc.tasks``, kept here by name.
DEFAULT_COPIES: Mapping[str, int] = MappingProxyType({name: spec.aug_copies for name, spec in TASKS.items()})

# TinyBERT's ``StopWordsList`` (NLTK's English list plus "'s" and "'re"), kept verbatim so the same words are
# skipped; entries with an apostrophe never match a basic-tokenized word and are harmless.
STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but
if or because as until while of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how all any
both each few more most other some such no nor not only own same so than too very s t can will just don don't
should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn
wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())

_REPLACEABLE = re.compile(r"[a-z]+")  # TinyBERT's ``_is_valid``
_PLACEHOLDER_TOKEN = re.compile(r"\[[^\]]*\]")  # [unused0], [MASK]-like tokens that are not real words
_CHUNK_EXAMPLES = 128  # examples whose sentences share MLM forwards
_CACHE_SENTENCES = 50_000  # LRU of per-sentence candidates: MNLI premises recur across examples

# The official train-file header of each task is ``TsvLayout.train_columns`` (``xtc.tasks``): the columns the
# loaders ignore are written too, so index-based readers (TinyBERT's processors) also read our files.
_ID_COLUMNS = frozenset({"index", "id", "qid1", "qid2", "#1 ID", "#2 ID", "promptID", "pairID", "old_index"})
_LABEL_COPIES = frozenset({"label1"})  # MNLI's annotator label: the gold label again
assert {name for name, spec in TASKS.items() if not spec.tsv.header} == {"cola"}


# ---------------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class _Slot:
    """A replaceable word: its character span in the original sentence and its candidates, best first."""

    start: int
    end: int
    candidates: tuple[str, ...]


class _MaskedRow(NamedTuple):
    """One MLM input: the sentence pair with one word masked in the first segment."""

    input_ids: list[int]
    token_type_ids: list[int]
    position: int  # of the [MASK]
    word: str  # the masked word, normalised
    sentence: int  # index among the sentences being computed
    span: tuple[int, int]  # the word's characters in that sentence


def _batches(rows: Sequence[_MaskedRow], max_tokens: int) -> Iterator[list[_MaskedRow]]:
    """Consecutive rows grouped so that rows x longest row <= ``max_tokens`` (a longer single row goes alone)."""
    batch: list[_MaskedRow] = []
    longest = 0
    for row in rows:
        grown = max(longest, len(row.input_ids))
        if batch and grown * (len(batch) + 1) > max_tokens:
            yield batch
            batch, grown = [], len(row.input_ids)
        batch.append(row)
        longest = grown
    if batch:
        yield batch


class _CandidateFinder:
    """Per-sentence candidates from the MLM (single-piece words) and GloVe (multi-piece words), cached."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, glove: GloVe | None,
                 k: int, max_seq_length: int, max_batch_tokens: int) -> None:
        self.model, self.tokenizer, self.glove, self.k = model, tokenizer, glove, k
        self.max_seq_length, self.max_batch_tokens = max_seq_length, max_batch_tokens
        self.use_token_types = "token_type_ids" in tokenizer.model_input_names
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.cache: OrderedDict[str, tuple[_Slot, ...]] = OrderedDict()
        self.tokens: dict[int, str | None] = {}
        self.forwards = 0

    def slots(self, texts: Iterable[str]) -> dict[str, tuple[_Slot, ...]]:
        """Candidates of every distinct text; new texts are computed together (one batched MLM pass)."""
        texts = list(dict.fromkeys(texts))
        new = [t for t in texts if t not in self.cache]
        if new:
            for text, slots in zip(new, self._compute(new), strict=True):
                self.cache[text] = slots
        for text in texts:
            self.cache.move_to_end(text)
        result = {text: self.cache[text] for text in texts}
        while len(self.cache) > _CACHE_SENTENCES:
            self.cache.popitem(last=False)
        return result

    def _compute(self, texts: list[str]) -> list[tuple[_Slot, ...]]:
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        cls, sep, mask = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.mask_token_id
        rows: list[_MaskedRow] = []
        found: list[dict[tuple[int, int], tuple[str, ...]]] = [{} for _ in texts]  # per sentence: span -> words
        for s, text in enumerate(texts):
            ids, offsets = encoded["input_ids"][s], encoded["offset_mapping"][s]
            first = ids[: self.max_seq_length - 3]  # like TinyBERT's cut at 512, but the masked copy comes first
            second = ids[: self.max_seq_length - 3 - len(first)]
            pair = [cls, *first, sep, *second, sep]
            types = [0] * (len(first) + 2) + [1] * (len(second) + 1)
            for _, group in itertools.groupby(range(len(ids)), key=encoded.word_ids(s).__getitem__):
                pieces = list(group)
                span = (offsets[pieces[0]][0], offsets[pieces[-1]][1])
                word = _normalize(text[span[0] : span[1]])
                if not _REPLACEABLE.fullmatch(word) or word in STOP_WORDS:
                    continue
                if len(pieces) > 1:
                    found[s][span] = tuple(self.glove.neighbours(word, self.k)) if self.glove else ()
                elif pieces[0] < len(first):
                    position = pieces[0] + 1  # after [CLS]
                    masked = pair.copy()
                    masked[position] = mask
                    rows.append(_MaskedRow(masked, types, position, word, s, span))
        for row, top_ids in zip(rows, self._mlm_top_k(rows), strict=True):
            found[row.sentence][row.span] = self._filter(top_ids, row.word)
        return [
            tuple(_Slot(start, end, cands) for (start, end), cands in sorted(spans.items()) if cands)
            for spans in found
        ]

    def _mlm_top_k(self, rows: Sequence[_MaskedRow]) -> Iterator[list[int]]:
        """Top-k token ids at each row's mask, with no gradient and dropout off."""
        import torch

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id or 0
        for batch in _batches(rows, self.max_batch_tokens):
            longest = max(len(row.input_ids) for row in batch)
            input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)  # (B, T)
            token_types = torch.zeros_like(input_ids)  # (B, T)
            attention = torch.zeros_like(input_ids)  # (B, T)
            for b, row in enumerate(batch):
                input_ids[b, : len(row.input_ids)] = torch.tensor(row.input_ids)
                token_types[b, : len(row.token_type_ids)] = torch.tensor(row.token_type_ids)
                attention[b, : len(row.input_ids)] = 1
            inputs = {"input_ids": input_ids, "attention_mask": attention}
            if self.use_token_types:
                inputs["token_type_ids"] = token_types
            positions = torch.tensor([row.position for row in batch], device=device)  # (B,)
            with torch.inference_mode():
                logits = self.model(**{key: value.to(device) for key, value in inputs.items()}).logits  # (B, T, V)
                at_mask = logits[torch.arange(len(batch), device=device), positions]  # (B, V)
                top = at_mask.topk(min(self.k, at_mask.shape[-1]), dim=-1).indices.tolist()  # (B, k)
            self.forwards += 1
            yield from top

    def _filter(self, top_ids: list[int], word: str) -> tuple[str, ...]:
        """TinyBERT drops ``##`` pieces; we also drop the word itself, special and placeholder tokens."""
        kept = []
        for token_id in top_ids:
            if token_id not in self.tokens:
                token = self.tokenizer.convert_ids_to_tokens(token_id) if token_id < len(self.tokenizer) else None
                bad = token is None or token_id in self.special_ids or token.startswith("##")
                self.tokens[token_id] = None if bad or _PLACEHOLDER_TOKEN.fullmatch(token) else token
            token = self.tokens[token_id]
            if token is not None and token != word:
                kept.append(token)
        return tuple(kept)


def _normalize(word: str) -> str:
    """Lowercase and strip accents, like BERT's basic tokenizer, for the stop-word and ``[a-z]`` checks."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def _sample(text: str, slots: Sequence[_Slot], p: float, rng: random.Random) -> str:
    """One copy: each slot is replaced with probability ``p`` by a uniformly drawn candidate."""
    parts, last = [], 0
    for slot in slots:
        if rng.random() < p:
            parts += [text[last : slot.start], rng.choice(slot.candidates)]
            last = slot.end
    parts.append(text[last:])
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- augmentation
def augment_examples(
    examples: Sequence[Example],
    task: str | TaskSpec,
    mlm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n_copies: int | None = None,
    p: float = AugmentConfig.p,
    k: int = AugmentConfig.k,
    glove: GloVe | None = None,
    seed: int = 0,
    max_seq_length: int = 512,
    *,
    max_batch_tokens: int = 4096,
    log_every: int = 1000,
    start: int = 0,
) -> list[Example]:
    """Each example followed by its ``n_copies`` augmented copies (``TaskSpec.aug_copies`` when None).

    Copies of example ``i`` are drawn from ``random.Random(f"{seed}/{i}")``, so the output depends only on the
    seed and the data, not on batching or on other examples; ``examples`` may be a part of a larger list whose
    first example has index ``start`` (``xtc augment`` works in resumable shards). ``max_batch_tokens`` bounds one MLM forward
    (rows x padded length): the logits take ``tokens x vocab x 4`` bytes, 0.5 GB for BERT's 30522 words.
    """
    spec = get_task(task)
    n_copies = spec.aug_copies if n_copies is None else n_copies
    _check_int("n_copies", n_copies, 0, "the number of augmented copies per example; 0 keeps only the originals")
    AugmentConfig(p, k)  # validated there, with the fix
    _check_int("seed", seed, None, "any integer")
    _check_int("max_seq_length", max_seq_length, 4, "the MLM input [CLS] masked [SEP] sentence [SEP]; use 512")
    limit = getattr(getattr(mlm_model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and max_seq_length > limit:
        raise ValueError(f"max_seq_length={max_seq_length} exceeds the MLM's max_position_embeddings={limit}; "
                         f"pass max_seq_length <= {limit}")
    _check_int("max_batch_tokens", max_batch_tokens, 1, "tokens per MLM forward, e.g. 4096")
    _check_int("log_every", log_every, 1, "examples between progress messages")
    _check_tokenizer(tokenizer)
    for i, example in enumerate(examples):
        if (example["text_b"] is not None) != spec.is_pair:
            kind = "sentence pairs (text_b set)" if spec.is_pair else "single sentences (text_b None)"
            raise ValueError(f"example {i} does not fit task {spec.name!r}, whose examples are {kind}; "
                             f"augment one task's examples at a time")

    finder = _CandidateFinder(mlm_model, tokenizer, glove, k, max_seq_length, max_batch_tokens)
    needs_candidates = p > 0 and n_copies > 0  # otherwise every copy is the original: skip the MLM
    was_training = mlm_model.training
    mlm_model.eval()  # dropout would make the candidates random
    started, out, next_log = time.perf_counter(), [], log_every
    try:
        for chunk_start in range(0, len(examples), _CHUNK_EXAMPLES):
            chunk = examples[chunk_start : chunk_start + _CHUNK_EXAMPLES]
            texts = [t for e in chunk for t in (e["text_a"], e["text_b"]) if t is not None]
            slots = finder.slots(texts) if needs_candidates else {}
            for i, example in enumerate(chunk, start=start + chunk_start):
                out.append(example)
                rng = random.Random(f"{seed}/{i}")
                for _ in range(n_copies):
                    a, b = (None if t is None else _sample(t, slots.get(t, ()), p, rng)
                            for t in (example["text_a"], example["text_b"]))
                    out.append(Example(text_a=a, text_b=b, label=example["label"]))
            done = chunk_start + len(chunk)
            if done >= next_log or done == len(examples):
                rate = done * (1 + spec.is_pair) / max(time.perf_counter() - started, 1e-9)
                log.info("augmented %d/%d %s examples (%.1f sentences/s, %d MLM forwards)",
                         done, len(examples), spec.name, rate, finder.forwards)
                next_log = (done // log_every + 1) * log_every
    finally:
        mlm_model.train(was_training)
    return out


def _check_int(name: str, value: object, minimum: int | None, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name}={value!r} must be an integer{bound} ({meaning})")


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    name = type(tokenizer).__name__
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {name} has no mask token; augmentation needs the masked LM's own tokenizer "
                         f"(e.g. bert-base-uncased, whose mask token is [MASK])")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(f"tokenizer {name} has no [CLS]/[SEP] tokens; the MLM input is BERT's "
                         f"[CLS] masked [SEP] sentence [SEP], so use a BERT-family tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {name} is not a fast tokenizer; word boundaries come from its offsets, so "
                         f"load it with AutoTokenizer.from_pretrained(..., use_fast=True)")


# ---------------------------------------------------------------------------------------------- writing
def write_augmented_tsv(
    task: str | TaskSpec, examples: Iterable[Example], path: str | os.PathLike[str]
) -> Path:
    """Write ``examples`` as a train file in the task's official layout, atomically; return the path.

    ``xtc.glue.read_tsv(task, path)`` reads it back (and so does ``load_local`` when it is named ``train.tsv``).
    Columns the loaders ignore get placeholders (row numbers for ids, empty text otherwise); tabs and line breaks
    inside a text become spaces, since the files are unquoted TSV.
    """
    spec, path = get_task(task), Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding=spec.tsv.encoding, newline="") as handle:
        handle.write(tsv_header(spec))
        rows = write_tsv_rows(spec, examples, handle)
    log.info("wrote %d augmented %s examples to %s", rows, spec.name, path)
    return path


def tsv_header(task: str | TaskSpec) -> str:
    """The header line of the task's train file ('' for CoLA, which has none)."""
    header = get_task(task).tsv.train_columns
    return "" if header is None else "\t".join(header) + "\n"


def write_tsv_rows(task: str | TaskSpec, examples: Iterable[Example], handle, first_row: int = 0) -> int:
    """Write ``examples`` as rows of the task's train file (no header) to ``handle``; row ``i`` of the whole file
    is numbered ``first_row + i`` (id columns), so a file written in parts equals one written at once."""
    spec = get_task(task)
    layout = spec.tsv
    header = layout.train_columns
    rows = cleaned = 0
    for rows, example in enumerate(examples, start=1):
        number = first_row + rows - 1
        texts = [example["text_a"], example["text_b"]][: len(layout.text_fields)]
        if any(t is None for t in texts):
            raise ValueError(f"example {number} has no text_b, but {spec.name!r} is a pair task")
        clean = [re.sub(r"[\t\r\n]", " ", t) for t in texts]
        cleaned += clean != texts
        label = _label_text(spec, example["label"], number)
        values = dict(zip(layout.text_fields, clean, strict=True)) | {layout.label_field: label}
        if header is None:  # CoLA: source, label, original label ('*' marks unacceptable), sentence
            values |= {0: "xtc_aug", 2: "*" if label == layout.file_labels[0] else ""}
            fields = [values[i] for i in range(layout.num_fields)]
        else:
            fields = [values.get(name, str(number) if name in _ID_COLUMNS else
                                 label if name in _LABEL_COPIES else "") for name in header]
        handle.write("\t".join(fields) + "\n")
    if cleaned:
        log.warning("%d examples had tabs or line breaks in their text; written as spaces", cleaned)
    return rows


def _label_text(spec: TaskSpec, label: object, row: int) -> str:
    """The label as the official file spells it (``entailment``, ``1``, ``3.8``)."""
    labels = spec.tsv.file_labels
    if labels is None:
        if isinstance(label, bool) or not isinstance(label, (int, float, np.number)) or not math.isfinite(label):
            raise ValueError(f"example {row}: label {label!r} of regression task {spec.name!r} must be a finite number")
        return repr(float(label))
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < len(labels):
        raise ValueError(f"example {row}: label {label!r} of {spec.name!r} must be an id in 0..{len(labels) - 1} "
                         f"({', '.join(spec.label_names)})")
    return labels[int(label)]
