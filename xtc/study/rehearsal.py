"""Rehearsal mode: run a study's whole workflow (same grid, same jobs, same rules) on tiny local stand-ins.

``snakemake --configfile config/studies/<study>.yaml --config rehearsal=true`` rehearses a study: the workflow
builds exactly the real study's job graph, and :func:`apply` swaps only what makes it cheap and offline:

* every model is a tiny random 12-layer BERT (the study's depth, ``teacher.layers``; hidden size 32) saved
  under ``<root>/inputs/``: the pretrained model (``teacher.model``), one fine-tuned teacher per task
  (``teacher.finetuned``, when the study gives teachers), the masked LM and a small GloVe file of augmentation;
* the data is a small synthetic GLUE folder in the official layout for every task the studies name;
* the budget is tiny: a few examples per split, short sequences, one augmented copy, one thread per job.

Everything else (grid, exclusions, epochs, learning rates, KD variants, step 1, export, packed evaluation,
tables with the paper's numbers, figures) is the study's own. Outputs go under the rehearsal root (the
workflow's working directory: ``<root>/results``, ``<root>/figures``), never into the real ``results/``.

Importing this module is cheap and torch-free (the Snakefile imports it); :func:`make_inputs` imports torch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = "rehearsal"  # relative to the repository (the Snakefile's folder)
INPUTS = "inputs"
# The tiny budget. The epochs of the grid stay as they are (they name the runs): with TRAIN_ROWS examples and
# a batch of BATCH_SIZE, every epoch is one optimizer step, so a 36-epoch run takes 36 steps.
TRAIN_ROWS, DEV_ROWS, BATCH_SIZE, MAX_SEQ_LENGTH, HIDDEN = 16, 8, 16, 32, 32
DATA = {"max_train_examples": TRAIN_ROWS, "max_eval_examples": None, "max_seq_length": MAX_SEQ_LENGTH,
        "batch_size": BATCH_SIZE}
RESOURCES = {"gpu": 0, "threads": 1, "teacher_threads": 1, "mem_mb": 1000, "mem_mb_small": 1000,
             "overhead_minutes": 1}
# Stand-in data: lowercase words plus plurals that split into two wordpieces (``dog ##s``), so augmentation
# takes both of its paths (masked-LM candidates for one-piece words, GloVe neighbours for multi-piece ones).
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = ("the", "a", "cat", "dog", "man", "woman", "bird", "house", "car", "tree", "river", "city", "book", "song",
         "food", "child", "teacher", "garden", "is", "was", "sees", "likes", "has", "runs", "sings", "reads",
         "eats", "found", "big", "small", "red", "old", "new", "happy", "sad", "good", "bad", "quick", "on", "in",
         "with", "near", "and", "not", "very", "today")
NOUNS = ("cat", "dog", "bird", "house", "car", "tree", "river", "book", "song", "garden")
VOCAB = (*SPECIAL, *WORDS, "##s", ".", ",", "?", "!")
GLOVE_DIM = 8


# ------------------------------------------------------------------------------------------------ config rewrite
def root_of(value: object, base: str | os.PathLike[str]) -> Path | None:
    """The rehearsal root of ``--config rehearsal=VALUE``: true -> <base>/rehearsal, a path -> that folder."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "0", "false",
                                                                                              "no", "off")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on")):
        return (Path(base) / DEFAULT_ROOT).resolve()
    if isinstance(value, str):
        root, base = (Path(base) / value).resolve(), Path(base).resolve()
        if root == base or root in base.parents:
            raise ValueError(f"rehearsal = {value!r} would make {root}, which holds the real study's results/, the "
                             f"rehearsal root; use rehearsal=true (root {DEFAULT_ROOT}/) or a folder of its own, "
                             f"e.g. rehearsal={DEFAULT_ROOT}-mine")
        return root
    raise ValueError(f"rehearsal = {value!r} is not allowed; use rehearsal=true (root {DEFAULT_ROOT}/) or "
                     f"rehearsal=/a/folder (the rehearsal root)")


def inputs_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / INPUTS


def stand_ins(root: str | os.PathLike[str]) -> dict[str, str]:
    """Where the stand-ins lie (absolute paths; ``teachers`` is a template with ``{task}``)."""
    base = inputs_dir(root).resolve()
    return {"pretrained": str(base / "pretrained"), "teachers": str(base / "teachers" / "{task}"),
            "mlm": str(base / "mlm"), "glove": str(base / "glove.txt"), "glue": str(base / "glue")}


def apply(studies: Sequence[dict], root: str | os.PathLike[str], base: str | os.PathLike[str]) -> list[dict]:
    """The validated ``studies`` with models, data and budget swapped for the rehearsal's (nothing else).

    ``base`` is the folder the study's relative paths (the paper's CSV files) are relative to: the workflow
    runs in ``root``, so they become absolute.
    """
    paths, out = stand_ins(root), []
    for study in studies:
        study = copy.deepcopy(study)
        teacher = study["teacher"]
        teacher["model"] = paths["pretrained"]
        given = teacher["finetuned"]
        if isinstance(given, dict):
            teacher["finetuned"] = {task: paths["teachers"].format(task=task) for task in given}
        elif given:
            teacher["finetuned"] = paths["teachers"]
        study["data"].update(DATA, glue_dir=paths["glue"])
        study["augment"].update(mlm=paths["mlm"], glove=paths["glove"], copies=1)
        study["resources"].update(RESOURCES)
        study["report"]["paper"] = [str((Path(base) / p).resolve()) for p in study["report"]["paper"]]
        out.append(study)
    return out


def offline_environment() -> None:
    """Switch the Hugging Face hub off for this process and the jobs it starts: a rehearsal never downloads."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.pop("GLUE_DIR", None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ------------------------------------------------------------------------------------------------ stand-in inputs
def _sentence(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(3, 10)):
        word = rng.choice(WORDS)
        words.append(word + "s" if word in NOUNS and rng.random() < 0.3 else word)
    return " ".join(words) + rng.choice((" .", " ?", " !"))


def synthetic_examples(task: str, n_rows: int, seed: str) -> list[dict]:
    """Random examples of ``task`` (hub label ids; STS-B scores in [0, 5])."""
    from xtc.tasks import TASKS

    spec, rng = TASKS[task], random.Random(seed)
    examples = []
    for _ in range(n_rows):
        label = round(rng.uniform(0, 5), 3) if spec.is_regression else rng.randrange(len(spec.label_names))
        examples.append({"text_a": _sentence(rng), "text_b": _sentence(rng) if spec.is_pair else None,
                         "label": label})
    return examples


def write_glue(folder: str | os.PathLike[str], tasks: Iterable[str], train_rows: int = TRAIN_ROWS,
               dev_rows: int = DEV_ROWS) -> Path:
    """A ``glue_data/`` folder with every split of ``tasks`` in the official layouts (xtc.glue reads it)."""
    from xtc.augment import write_augmented_tsv
    from xtc.tasks import TASKS

    folder = Path(folder)
    for task in tasks:
        spec = TASKS[task]
        for split, name in spec.tsv.files.items():
            rows = train_rows if split == "train" else dev_rows
            path = folder / spec.tsv.directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_augmented_tsv(spec, synthetic_examples(task, rows, f"{task}/{split}"), path)
    return folder


def write_glove(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """A GloVe text file over the stand-in words and their plurals (random vectors: neighbours are arbitrary)."""
    rng = random.Random(seed)
    words = [*WORDS, *(f"{noun}s" for noun in NOUNS)]
    lines = [f"{w} {' '.join(f'{rng.gauss(0, 1):.4f}' for _ in range(GLOVE_DIM))}" for w in words]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file= in the constructor: load the folder, and check the vocabulary arrived
    tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    if len(tokenizer) != len(VOCAB):
        raise RuntimeError(f"stand-in tokenizer has {len(tokenizer)} tokens, expected {len(VOCAB)}")
    return tokenizer


def make_inputs(root: str | os.PathLike[str], tasks: Iterable[str], layers: int) -> Path:
    """Write the stand-ins under ``<root>/inputs`` (skipped when a stamp says they are already there)."""
    from xtc.tasks import TASKS

    tasks = sorted(set(tasks))
    base, paths = inputs_dir(root), stand_ins(root)
    stamp = base / "stand-ins.json"
    wanted = {"tasks": tasks, "layers": layers, "hidden": HIDDEN, "vocab": len(VOCAB),
              "train_rows": TRAIN_ROWS, "dev_rows": DEV_ROWS}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return base
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from xtc.models import random_model, tiny_bert_config

    hf_logging.disable_progress_bar()
    log.info("rehearsal: writing %d-layer stand-in models and data for %s under %s", layers, ", ".join(tasks), base)
    base.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(base / "tokenizer")
    shape = dict(vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=2,
                 intermediate_size=2 * HIDDEN, max_position_embeddings=MAX_SEQ_LENGTH)
    random_model(tiny_bert_config(**shape), seed=0).save_pretrained(paths["pretrained"])
    tokenizer.save_pretrained(paths["pretrained"])
    for i, task in enumerate(tasks):
        spec = TASKS[task]
        config = tiny_bert_config(**shape, num_labels=spec.num_labels,
                                  problem_type="regression" if spec.is_regression else None)
        folder = paths["teachers"].format(task=task)
        random_model(config, seed=1 + i).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    # `xtc augment` reads sentences up to 512 tokens: the masked LM has BERT's 512 positions
    BertForMaskedLM(tiny_bert_config(**{**shape, "num_hidden_layers": 2, "max_position_embeddings": 512})
                    ).save_pretrained(paths["mlm"])
    tokenizer.save_pretrained(paths["mlm"])
    write_glove(paths["glove"])
    write_glue(paths["glue"], tasks)
    stamp.write_text(json.dumps(wanted, indent=1) + "\n")
    return base
