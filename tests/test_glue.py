"""xtc.glue: the TASKS table, loading real and synthetic glue_data files, the hub mapping, tokenization."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from guards import REAL_GLUE
from textdata import DIRECTORIES, SPLITS, VOCAB, synthetic_examples, tiny_tokenizer, write_glue_tsv

from xtc import glue, sources
from xtc.config import GLUE_TASK_NAMES
from xtc.collate import PaddingCollator, make_collator
from xtc.glue import load_hub, load_local, load_split, read_tsv, subsample, tokenize
from xtc.tasks import TASKS, get_task

REPO = Path(__file__).resolve().parents[1]
# Row counts from shared/data/glue/SOURCE.md.
REAL_ROWS = [
    ("cola", "train", 8551), ("cola", "validation", 1043), ("sst2", "train", 67349), ("sst2", "validation", 872),
    ("mrpc", "train", 3668), ("mrpc", "validation", 408), ("qnli", "validation", 5463), ("rte", "train", 2490),
    ("rte", "validation", 277), ("wnli", "train", 635), ("wnli", "validation", 71),
]
needs_real_glue = pytest.mark.usefixtures("real_glue")  # tests/conftest.py: a skip, or a failure under CI


@pytest.fixture(autouse=True)
def _no_glue_dir(monkeypatch):
    """A user's GLUE_DIR must not change which source the tests read."""
    monkeypatch.delenv(glue.GLUE_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------------------------- the table
def test_table_has_every_task_of_the_config():
    assert tuple(TASKS) == GLUE_TASK_NAMES
    assert len({hash(spec) for spec in TASKS.values()}) == len(TASKS)  # usable as cache keys


def test_label_ids_follow_the_hub():
    expected = {
        "cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"), "stsb": (), "qqp": ("not_duplicate", "duplicate"),
        "mnli": ("entailment", "neutral", "contradiction"), "qnli": ("entailment", "not_entailment"),
        "rte": ("entailment", "not_entailment"), "wnli": ("not_entailment", "entailment"),
    }
    assert {name: spec.label_names for name, spec in TASKS.items()} == expected
    assert [name for name, spec in TASKS.items() if spec.is_regression] == ["stsb"]
    assert {name: spec.num_labels for name, spec in TASKS.items()} == {
        "cola": 2, "sst2": 2, "mrpc": 2, "stsb": 1, "qqp": 2, "mnli": 3, "qnli": 2, "rte": 2, "wnli": 2,
    }


def test_metrics_selection_and_splits():
    assert {name: spec.selection_metric for name, spec in TASKS.items()} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "accuracy", "stsb": "pearson", "qqp": "accuracy",
        "mnli": "mnli_m/accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy",
    }
    assert TASKS["mnli"].metric_keys == ("mnli_m/accuracy", "mnli_mm/accuracy")
    assert TASKS["mrpc"].metric_keys == ("accuracy", "f1")
    assert TASKS["stsb"].metric_keys == ("pearson", "spearman")
    assert TASKS["mnli"].splits == ("train", "validation_matched", "validation_mismatched")
    assert all(spec.splits == ("train", "validation") for name, spec in TASKS.items() if name != "mnli")
    assert {name for name, spec in TASKS.items() if not spec.is_pair} == {"cola", "sst2"}
    assert TASKS["mnli"].text_columns == ("premise", "hypothesis")
    assert {spec.title for spec in TASKS.values()} == set(DIRECTORIES.values())


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown task 'sst'; did you mean 'sst2'\? known tasks: cola, sst2, mrpc"):
        get_task("sst")
    assert get_task(TASKS["rte"]) is TASKS["rte"]


def test_unknown_split_suggests_the_closest():
    with pytest.raises(ValueError, match=r"task 'mnli' has no split 'validation'; did you mean 'validation_matched'"):
        load_split("mnli", "validation", data_dir="/nonexistent")
    with pytest.raises(ValueError, match=r"no split 'test'.*no test split"):
        TASKS["rte"].check_split("test")
    with pytest.raises(ValueError, match=r"'mnli' has 2 eval splits"):
        TASKS["mnli"].eval_split()


# ---------------------------------------------------------------------------------------------- real files
@needs_real_glue
@pytest.mark.parametrize(("task", "split", "rows"), REAL_ROWS)
def test_real_files_load_with_exact_row_counts(task, split, rows):
    examples = load_local(task, REAL_GLUE, split)
    assert len(examples) == rows
    spec = TASKS[task]
    assert all((e["text_b"] is not None) == spec.is_pair for e in examples)
    assert {e["label"] for e in examples} == set(range(spec.num_labels))


@needs_real_glue
def test_real_rows_are_read_verbatim():
    mrpc = load_local("mrpc", REAL_GLUE, "validation")  # header with a BOM, stray quotes
    assert mrpc[0] == {
        "text_a": "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        "text_b": '" The foodservice pie business does not fit our long-term growth strategy .',
        "label": 1,
    }
    cola_dev = load_local("cola", REAL_GLUE, "validation")  # no trailing newline
    assert cola_dev[-1] == {"text_a": "John talked to Bill about himself.", "text_b": None, "label": 1}
    assert load_local("rte", REAL_GLUE, "validation")[0]["label"] == 1  # not_entailment
    assert load_local("qnli", REAL_GLUE, "validation")[0]["label"] == 0  # entailment
    assert load_local("sst2", REAL_GLUE, "validation")[0]["text_a"] == "it 's a charming and often affecting journey . "


@needs_real_glue
def test_real_missing_split_file_names_the_file():
    with pytest.raises(ValueError, match=r"QNLI/train\.tsv not found.*holds only \['dev\.tsv'\].*data_dir"):
        load_local("qnli", REAL_GLUE, "train")


# ---------------------------------------------------------------------------------------------- synthetic files
@pytest.mark.parametrize(("task", "split"), [(t, s) for t in GLUE_TASK_NAMES for s in SPLITS[t]])
def test_synthetic_round_trip(tmp_path, task, split):
    write_glue_tsv(tmp_path, task, split, n_rows=40, seed=3)
    assert load_local(task, tmp_path, split) == synthetic_examples(task, split, 40, seed=3)


def test_read_tsv_reads_any_file_in_the_layout(tmp_path):
    path = write_glue_tsv(tmp_path, "qnli", "train", 5)
    augmented = path.rename(tmp_path / "train_aug.tsv")
    assert read_tsv("qnli", augmented) == synthetic_examples("qnli", "train", 5, seed=0)


def test_synthetic_details(tmp_path):
    assert write_glue_tsv(tmp_path, "mrpc", "train", 3).read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    cola = write_glue_tsv(tmp_path, "cola", "validation", 5, trailing_newline=False)
    assert not cola.read_text().endswith("\n") and len(load_local("cola", tmp_path, "validation")) == 5
    stsb = load_local("stsb", write_glue_tsv(tmp_path, "stsb", "train", 30).parents[1], "train")
    assert all(isinstance(e["label"], float) and 0 <= e["label"] <= 5 for e in stsb)
    texts = [e["text_a"] for e in load_local("qqp", write_glue_tsv(tmp_path, "qqp", "train", 30).parents[1], "train")]
    assert any(text.count('"') % 2 == 1 for text in texts)  # an unbalanced quote stays text


def test_mnli_matched_and_mismatched_are_distinct_files(tmp_path):
    matched = write_glue_tsv(tmp_path, "mnli", "validation_matched", 20, seed=1)
    mismatched = write_glue_tsv(tmp_path, "mnli", "validation_mismatched", 20, seed=1)
    assert (matched.name, mismatched.name) == ("dev_matched.tsv", "dev_mismatched.tsv")
    assert len(matched.read_text().splitlines()[0].split("\t")) == 16
    assert load_split("mnli", "validation_matched", tmp_path) != load_split("mnli", "validation_mismatched", tmp_path)
    labels = {e["label"] for e in load_split("mnli", "validation_matched", tmp_path)}
    assert labels == {0, 1, 2}


# ---------------------------------------------------------------------------------------------- bad inputs
def test_wrong_field_count_names_file_and_line(tmp_path):
    path = write_glue_tsv(tmp_path, "rte", "train", 4)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0]  # drop the label of the 3rd data row (line 4)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}, line 4: expected 4 tab-separated fields, found 3"):
        load_local("rte", tmp_path, "train")


def test_wrong_field_count_in_headerless_cola(tmp_path):
    path = write_glue_tsv(tmp_path, "cola", "train", 3)
    path.write_text(path.read_text() + "gj04\t1\textra\tfield\tsentence\n")
    with pytest.raises(ValueError, match=r"CoLA/train\.tsv, line 4: expected 4 tab-separated fields, found 5"):
        load_local("cola", tmp_path, "train")


def test_unknown_label_names_file_line_and_allowed(tmp_path):
    path = write_glue_tsv(tmp_path, "mnli", "train", 3)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t-"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError,
        match=rf"{path}, line 3: unknown label '-'; allowed labels: \['entailment', 'neutral', 'contradiction'\]",
    ):
        load_local("mnli", tmp_path, "train")


def test_bad_regression_score(tmp_path):
    path = write_glue_tsv(tmp_path, "stsb", "validation", 2)
    path.write_text(path.read_text() + "\t".join(["9"] * 9 + ["high"]) + "\n")
    with pytest.raises(ValueError, match=r"STS-B/dev\.tsv, line 4: label 'high' is not a number"):
        load_local("stsb", tmp_path, "validation")


def test_missing_task_folder_says_how_to_get_glue(tmp_path):
    write_glue_tsv(tmp_path, "rte", "train", 2)
    with pytest.raises(ValueError, match=r"no 'SST-2' folder for task 'sst2' in .*expected .*SST-2 .*GLUE_DIR"):
        load_local("sst2", tmp_path, "train")
    with pytest.raises(ValueError, match=r"data_dir '.*nowhere' is not a folder; download GLUE"):
        load_local("rte", tmp_path / "nowhere", "train")


def test_changed_header_is_reported(tmp_path):
    path = write_glue_tsv(tmp_path, "qqp", "train", 2)
    path.write_text(path.read_text().replace("question2", "q2", 1))
    with pytest.raises(ValueError, match=r"has no column 'question2'; expected the official GLUE layout"):
        load_local("qqp", tmp_path, "train")


# ---------------------------------------------------------------------------------------------- sources, subsets
def test_glue_dir_environment_is_the_fallback(tmp_path, monkeypatch):
    write_glue_tsv(tmp_path, "wnli", "train", 7)
    monkeypatch.setenv(glue.GLUE_DIR_ENV, str(tmp_path))
    assert len(load_split("wnli", "train")) == 7


def test_subsampling_is_seeded(tmp_path):
    write_glue_tsv(tmp_path, "sst2", "train", 100)
    everything = load_split("sst2", "train", tmp_path)
    first = load_split("sst2", "train", tmp_path, max_examples=10, seed=1)
    assert first == load_split("sst2", "train", tmp_path, max_examples=10, seed=1)
    assert first != load_split("sst2", "train", tmp_path, max_examples=10, seed=2)
    assert len(first) == 10 and all(e in everything for e in first)
    positions = [everything.index(e) for e in first]
    assert positions == sorted(positions)  # file order kept
    assert load_split("sst2", "train", tmp_path, max_examples=100) == everything
    assert load_split("sst2", "train", tmp_path, max_examples=500) == everything
    with pytest.raises(ValueError, match=r"max_examples=0 must be a positive integer"):
        subsample(everything, 0)


class _FakeHub:
    """Replaces ``datasets.load_dataset``: the hub is never contacted in tests."""

    def __init__(self, columns=None, error=None):
        self.columns, self.error, self.calls = columns, error, []

    def __call__(self, path, name, split):
        self.calls.append((path, name, split))
        if self.error:
            raise self.error
        return datasets.Dataset.from_dict(self.columns)


@pytest.fixture
def online(monkeypatch):
    """The hub counts as reachable (the fake ``load_dataset`` stands in for it)."""
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)


def test_hub_columns_map_to_examples(monkeypatch, online):
    fake = _FakeHub({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0], "idx": [0, 1]})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_split("mnli", "validation_mismatched") == [
        {"text_a": "p1", "text_b": "h1", "label": 2}, {"text_a": "p2", "text_b": "h2", "label": 0},
    ]
    assert fake.calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    fake.columns = {"sentence": ["s"], "label": [1], "idx": [0]}
    assert load_hub("sst2", "train") == [{"text_a": "s", "text_b": None, "label": 1}]
    fake.columns = {"sentence1": ["a"], "sentence2": ["b"], "label": [3.8], "idx": [0]}
    assert load_hub("stsb", "validation") == [{"text_a": "a", "text_b": "b", "label": pytest.approx(3.8)}]


def test_hub_failure_says_to_use_a_local_folder(monkeypatch, online):
    monkeypatch.setattr(datasets, "load_dataset", _FakeHub(error=ConnectionError("outage")))
    with pytest.raises(RuntimeError, match=r"could not load rte/train .*outage.*set data_dir \(or GLUE_DIR\)"):
        load_split("rte", "train")


def test_offline_without_a_local_folder_fails_before_datasets_is_asked(monkeypatch, tmp_path):
    fake = _FakeHub({"sentence": ["s"], "label": [1], "idx": [0]})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))  # an empty cache; the tests run with HF_HUB_OFFLINE=1
    with pytest.raises(sources.SourceError, match=r"no GLUE data for sst2: .*HF_HUB_OFFLINE is set.*set GLUE_DIR"):
        load_split("sst2", "train")
    assert fake.calls == []
    (tmp_path / "nyu-mll___glue" / "sst2").mkdir(parents=True)  # what the datasets cache holds after a download
    load_split("sst2", "train")
    assert fake.calls == [("nyu-mll/glue", "sst2", "train")]


# ---------------------------------------------------------------------------------------------- tokenization
def test_tokenize_and_collate_pairs(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    write_glue_tsv(tmp_path, "rte", "train", 6)
    features = tokenize(load_local("rte", tmp_path, "train"), tokenizer, max_length=16)
    assert all(len(f["input_ids"]) <= 16 for f in features)
    assert any(len(f["input_ids"]) == 16 for f in features)  # truncated
    assert all(tokenizer.unk_token_id not in f["input_ids"] for f in features)
    assert all(set(f["token_type_ids"]) == {0, 1} for f in features)
    batch = make_collator(tokenizer)(features[:4])
    lengths = [len(f["input_ids"]) for f in features[:4]]
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (4, max(lengths)) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["labels"].dtype == torch.long
    for row, length in enumerate(lengths):
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert batch["input_ids"][row, :length].tolist() == features[row]["input_ids"]


def test_regression_labels_are_float(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    examples = synthetic_examples("stsb", "train", 3, seed=0)
    batch = PaddingCollator(tokenizer.pad_token_id)(tokenize(examples, tokenizer, max_length=128))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([e["label"] for e in examples])


def test_single_sentence_tokens(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    features = tokenize([{"text_a": "The cat runs .", "text_b": None, "label": 1}], tokenizer, max_length=8)
    ids = [VOCAB.index(t) for t in ("[CLS]", "the", "cat", "runs", ".", "[SEP]")]
    assert features == [{"input_ids": ids, "token_type_ids": [0] * 6, "attention_mask": [1] * 6, "labels": 1}]


def test_tokenize_rejects_bad_input(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    mixed = [{"text_a": "a", "text_b": None, "label": 0}, {"text_a": "a", "text_b": "b", "label": 0}]
    with pytest.raises(ValueError, match="mix single sentences and sentence pairs"):
        tokenize(mixed, tokenizer, max_length=8)
    with pytest.raises(ValueError, match=r"max_length=1 must be an integer >= 2"):
        tokenize(mixed[:1], tokenizer, max_length=1)
    with pytest.raises(ValueError, match="empty batch"):
        PaddingCollator()([])


def test_importing_glue_and_metrics_does_not_import_torch():
    code = "import sys, xtc.glue, xtc.metrics; print(sorted({'torch', 'datasets', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_task_facts_live_in_the_table():
    from xtc.augment import DEFAULT_COPIES

    sizes = {name: spec.train_size for name, spec in TASKS.items()}
    assert sizes == {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
                     "qnli": 104743, "rte": 2490, "wnli": 635}
    copies = {name: spec.aug_copies for name, spec in TASKS.items()}
    assert copies == dict(DEFAULT_COPIES) == {"cola": 30, "mnli": 10, "mrpc": 30, "sst2": 20, "stsb": 30, "qqp": 10,
                                              "qnli": 20, "rte": 30, "wnli": 30}
    assert TASKS["mnli"].tsv.train_columns[-1] == "gold_label" and TASKS["cola"].tsv.train_columns is None
