"""Synthetic GLUE files in the exact official ``glue_data/`` layouts, and a tiny offline tokenizer.

The layouts here are written out independently of ``xtc.tasks.TASKS`` (headers, column order, label strings,
BOM, file names), so a wrong entry in the table fails the round-trip tests instead of agreeing with itself.
Texts use a small lowercase vocabulary (plus capitals, punctuation and stray ``"``), so the tiny tokenizer
never needs ``[UNK]`` for them and ``QUOTE_NONE`` parsing is exercised.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = (
    "the", "a", "cat", "dog", "man", "woman", "bird", "house", "car", "tree", "river", "city", "book", "song",
    "food", "child", "teacher", "garden", "is", "was", "sees", "likes", "has", "runs", "sings", "reads", "eats",
    "found", "big", "small", "red", "old", "new", "happy", "sad", "good", "bad", "quick", "on", "in", "with",
    "near", "and", "not", "very", "today", "yesterday", "never", "s",
)
PUNCTUATION = (".", ",", "?", "!", '"', "'", "(", ")", "-")
VOCAB = SPECIAL_TOKENS + WORDS + PUNCTUATION
assert len(VOCAB) <= 128, "must fit xtc.models.tiny_bert_config() (vocab_size=128)"

# Official layouts (SOURCE.md and the GLUE download script), independent of xtc.glue.
DIRECTORIES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
    "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
}
FILES = {"train": "train.tsv", "validation": "dev.tsv",
         "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"}
SPLITS = {task: ("train", "validation") for task in DIRECTORIES} | {
    "mnli": ("train", "validation_matched", "validation_mismatched")
}
FILE_LABELS = {
    "mnli": ("entailment", "neutral", "contradiction"),  # hub ids 0, 1, 2
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
} | {task: ("0", "1") for task in ("cola", "sst2", "mrpc", "qqp", "wnli")}
_MNLI_COLUMNS = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
HEADERS = {
    "sst2": ("sentence", "label"),
    "mrpc": ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
    "stsb": ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
             "score"),
    "qqp": ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
    "qnli": ("index", "question", "sentence", "label"),
    "rte": ("index", "sentence1", "sentence2", "label"),
    "wnli": ("index", "sentence1", "sentence2", "label"),
}
PAIR_TASKS = ("mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS[:-1]) for _ in range(rng.randint(3, 12))]
    if rng.random() < 0.3:  # a stray, unbalanced quote, as in MRPC and SST-2
        words.insert(rng.randrange(len(words)), '"')
    if rng.random() < 0.2:
        words.insert(rng.randrange(1, len(words) + 1), "'s")
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice((" .", "?", "!", " ."))


def synthetic_examples(task: str, split: str, n_rows: int, seed: int) -> list[dict]:
    """The examples ``write_glue_tsv`` writes, as ``xtc.glue`` should read them back (hub label ids)."""
    if split not in SPLITS[task]:
        raise ValueError(f"{task} has no split {split!r}; splits: {SPLITS[task]}")
    rng = random.Random(f"{task}/{split}/{seed}")
    examples = []
    for _ in range(n_rows):
        label = round(rng.uniform(0, 5), 3) if task == "stsb" else rng.randrange(len(FILE_LABELS[task]))
        text_b = _sentence(rng) if task in PAIR_TASKS else None
        examples.append({"text_a": _sentence(rng), "text_b": text_b, "label": label})
    return examples


def _row(task: str, split: str, i: int, example: dict) -> list[str]:
    a, b, label = example["text_a"], example["text_b"], example["label"]
    if task == "stsb":
        return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, f"{label:.3f}"]
    gold = FILE_LABELS[task][label]
    if task == "cola":
        return ["gj04", gold, "" if gold == "1" else "*", a]
    if task == "sst2":
        return [a, gold]
    if task == "mrpc":
        return [gold, str(1000 + 2 * i), str(1001 + 2 * i), a, b]
    if task == "qqp":
        return [str(i), str(2 * i + 1), str(2 * i + 2), a, b, gold]
    if task == "mnli":
        annotators = [gold] if split == "train" else [gold, gold, FILE_LABELS[task][0], gold, gold]
        parses = [f"( {a} )", f"( {b} )", f"(ROOT {a})", f"(ROOT {b})"]
        return [str(i), str(30000 + i), f"{30000 + i}e", "fiction", *parses, a, b, *annotators, gold]
    return [str(i), a, b, gold]  # qnli, rte, wnli


def _header(task: str, split: str) -> tuple[str, ...] | None:
    if task == "cola":
        return None
    if task == "mnli":
        labels = ("label1",) if split == "train" else ("label1", "label2", "label3", "label4", "label5")
        return (*_MNLI_COLUMNS, *labels, "gold_label")
    return HEADERS[task]


def write_glue_tsv(
    root: Path, task: str, split: str, n_rows: int, seed: int = 0, trailing_newline: bool = True
) -> Path:
    """Write ``root/<TaskDir>/<file>.tsv`` in the official layout of ``task``; return its path.

    CoLA has no header, MRPC's header starts with a UTF-8 BOM, MNLI's dev files carry five annotator labels
    (16 columns, train has 12), STS-B scores are written with three decimals.
    """
    examples = synthetic_examples(task, split, n_rows, seed)
    lines = [] if (header := _header(task, split)) is None else ["\t".join(header)]
    lines += ["\t".join(_row(task, split, i, example)) for i, example in enumerate(examples)]
    path = Path(root) / DIRECTORIES[task] / FILES[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path.write_text(text, encoding="utf-8-sig" if task == "mrpc" else "utf-8", newline="")
    return path


def tiny_tokenizer(tmp_path: Path):
    """An offline ``BertTokenizerFast`` (lowercasing WordPiece) over ``VOCAB``: nothing is downloaded.

    Built with ``from_pretrained`` on a folder holding only ``vocab.txt``: in transformers 5 the constructor
    ignores ``vocab_file=`` and silently keeps only the special tokens, hence the length check.
    """
    from transformers import BertTokenizerFast

    folder = Path(tmp_path) / "tiny_tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    assert len(tokenizer) == len(VOCAB), (len(tokenizer), len(VOCAB))
    return tokenizer
