"""xtc.augment: TinyBERT-style augmentation with a tiny random MLM, a tiny GloVe file, and the TSV round trip."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import torch
from textdata import DIRECTORIES, FILE_LABELS, HEADERS, VOCAB, synthetic_examples, tiny_tokenizer
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from xtc import augment
from xtc.augment import DEFAULT_COPIES, STOP_WORDS, augment_examples, write_augmented_tsv
from xtc.glove import load_glove
from xtc.tasks import TASKS
from xtc.glue import load_local, read_tsv

# Lowercase, space-separated, one wordpiece per word: whitespace position i is token i of the sentence.
SENTENCE = "the old man sees a happy dog near the river"
CONTENT = {1, 2, 3, 5, 6, 7, 9}  # old man sees happy dog near river; the others are stop-words
PAIR = {"text_a": SENTENCE, "text_b": "a small child reads the new book", "label": 1}


def _mlm(vocab_size: int) -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def mlm(tokenizer):
    return _mlm(len(tokenizer))


@pytest.fixture(scope="module")
def piece_tokenizer(tmp_path_factory):
    """The tiny vocabulary plus ``##s``: 'dogs' becomes ``dog ##s``, a multi-piece word."""
    folder = tmp_path_factory.mktemp("piece_tok")
    (folder / "vocab.txt").write_text("\n".join((*VOCAB, "##s")) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    assert tok.tokenize("dogs") == ["dog", "##s"]
    return tok


@pytest.fixture
def glove_file(tmp_path):
    """Neighbours by construction: dogs -> puppies, hounds; birds -> sparrows, finches; cat far from both."""
    rows = {
        "dogs": [1, 0, 0], "puppies": [0.95, 0.1, 0], "hounds": [0.9, 0.3, 0], "birds": [0, 1, 0],
        "sparrows": [0.1, 0.95, 0], "finches": [0.2, 0.9, 0.1], "cat": [0, 0, 1], "rare": [0.5, 0.5, 0.5],
    }
    path = tmp_path / "glove.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()), encoding="utf-8")
    return path


def direct_candidates(model, tokenizer, sentence: str, index: int, k: int, word: str | None = None) -> list[str]:
    """TinyBERT's MLM call written out: ``[CLS] masked [SEP] sentence [SEP]``, top-k at the mask, filtered.

    ``index`` is the wordpiece to mask; ``word`` (default: whitespace word ``index``) is the one excluded.
    """
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    masked = list(ids)
    masked[index] = tokenizer.mask_token_id
    input_ids = [tokenizer.cls_token_id, *masked, tokenizer.sep_token_id, *ids, tokenizer.sep_token_id]
    token_types = [0] * (len(ids) + 2) + [1] * (len(ids) + 1)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids]), token_type_ids=torch.tensor([token_types])).logits
    top = tokenizer.convert_ids_to_tokens(logits[0, index + 1].topk(k).indices.tolist())
    word = sentence.split()[index] if word is None else word
    return [t for t in top if t != word and t not in tokenizer.all_special_tokens and not t.startswith("##")]


def copies_of(out, n_copies, i=0):
    return out[i * (1 + n_copies) + 1 : (i + 1) * (1 + n_copies)]


# ---------------------------------------------------------------------------------------------- shape of the output
def test_count_originals_and_labels(mlm, tokenizer):
    examples = synthetic_examples("sst2", "train", 5, seed=0)
    out = augment_examples(examples, "sst2", mlm, tokenizer, n_copies=3)
    assert len(out) == len(examples) * (1 + 3)
    for i, example in enumerate(examples):
        group = out[i * 4 : (i + 1) * 4]
        assert group[0] == example  # TinyBERT writes the original line first
        assert all(e["label"] == example["label"] and e["text_b"] is None for e in group)


def test_default_copies_follow_tinybert(mlm, tokenizer):
    assert dict(DEFAULT_COPIES) == {"cola": 30, "sst2": 20, "mrpc": 30, "stsb": 30, "qqp": 10, "mnli": 10,
                                    "qnli": 20, "rte": 30, "wnli": 30}
    out = augment_examples([PAIR], "rte", mlm, tokenizer)
    assert len(out) == 1 + 30


def test_p_zero_gives_identical_copies_without_the_mlm(tokenizer):
    def fail(*args, **kwargs):
        raise AssertionError("the MLM must not run when p=0")

    model = _mlm(len(tokenizer))
    model.forward = fail
    out = augment_examples([PAIR], "rte", model, tokenizer, n_copies=4, p=0.0)
    assert out == [PAIR] * 5


# ---------------------------------------------------------------------------------------------- candidates
def test_replacements_are_the_mlm_top_k_of_the_original_sentence(mlm, tokenizer):
    k = 15
    out = augment_examples([{"text_a": SENTENCE, "text_b": None, "label": 0}], "sst2", mlm, tokenizer,
                           n_copies=8, p=1.0, k=k)
    original = SENTENCE.split()
    expected = {i: direct_candidates(mlm, tokenizer, SENTENCE, i, k) for i in CONTENT}
    assert all(expected.values()), "the tiny MLM must leave candidates for this test to mean anything"
    seen = set()
    for copy_ in copies_of(out, 8):
        words = copy_["text_a"].split()
        assert len(words) == len(original)
        for i, (new, old) in enumerate(zip(words, original, strict=True)):
            if i in CONTENT:  # p=1: every content word is replaced, by one of its candidates
                assert new in expected[i], (i, new, expected[i])
                seen.add((i, new))
            else:
                assert new == old  # stop-words are never replaced
    assert len(seen) > len(CONTENT)  # candidates are drawn, not always the first


def test_stop_words_are_never_replaced(mlm, tokenizer):
    stop = [w for w in ("the", "a", "is", "was", "on", "in", "with", "and", "not", "very") if w in STOP_WORDS]
    assert len(stop) == 10
    sentence = " ".join(stop)
    out = augment_examples([{"text_a": sentence, "text_b": None, "label": 0}], "sst2", mlm, tokenizer,
                           n_copies=5, p=1.0)
    assert [e["text_a"] for e in out] == [sentence] * 6


def test_punctuation_and_case_are_kept(mlm, tokenizer):
    sentence = 'The Dog , "sees" a cat !'
    out = augment_examples([{"text_a": sentence, "text_b": None, "label": 0}], "sst2", mlm, tokenizer,
                           n_copies=3, p=1.0)
    for copy_ in copies_of(out, 3):
        words = copy_["text_a"].split()
        assert words[0] == "The" and words[2] == "," and words[3].startswith('"') and words[3].endswith('"')
        assert words[1] != "Dog" and words[-1] == "!"


def test_pair_tasks_augment_both_sentences(mlm, tokenizer):
    out = augment_examples([PAIR], "rte", mlm, tokenizer, n_copies=4, p=1.0)
    for copy_ in copies_of(out, 4):
        assert copy_["text_a"] != PAIR["text_a"] and copy_["text_b"] != PAIR["text_b"]
        assert copy_["label"] == PAIR["label"]


def test_seeded(mlm, tokenizer):
    examples = synthetic_examples("mrpc", "train", 4, seed=1)
    first = augment_examples(examples, "mrpc", mlm, tokenizer, n_copies=3, seed=7)
    assert augment_examples(examples, "mrpc", mlm, tokenizer, n_copies=3, seed=7) == first
    assert augment_examples(examples, "mrpc", mlm, tokenizer, n_copies=3, seed=8) != first
    # an example's copies depend on its index and the seed only, not on the other examples
    assert augment_examples(examples[:2], "mrpc", mlm, tokenizer, n_copies=3, seed=7) == first[:8]


def test_one_mlm_row_per_word_of_each_distinct_sentence(tokenizer):
    model = _mlm(len(tokenizer))
    rows = []
    model.register_forward_hook(lambda module, args, kwargs, output: rows.append(kwargs["input_ids"].shape[0]),
                                with_kwargs=True)
    example = {"text_a": SENTENCE, "text_b": None, "label": 0}
    augment_examples([example] * 3, "sst2", model, tokenizer, n_copies=10, p=1.0)
    assert sum(rows) == len(CONTENT)  # not x3 examples, not x10 copies
    rows.clear()
    augment_examples([example] * 3, "sst2", model, tokenizer, n_copies=2, max_batch_tokens=3 * 23)
    assert rows == [3, 3, 1]  # 23 tokens per row: [CLS] 10 [SEP] 10 [SEP]


def test_long_sentences_are_cut_like_tinybert(mlm, tokenizer):
    out = augment_examples([{"text_a": SENTENCE, "text_b": None, "label": 0}], "sst2", mlm, tokenizer,
                           n_copies=3, p=1.0, max_seq_length=3 + 4)
    for copy_ in copies_of(out, 3):
        words = copy_["text_a"].split()
        assert words[4:] == SENTENCE.split()[4:]  # only the first 4 tokens fit the masked segment
        assert words[1] != "old"


def test_model_mode_is_restored(tokenizer):
    model = _mlm(len(tokenizer)).train()
    augment_examples([PAIR], "rte", model, tokenizer, n_copies=1)
    assert model.training


# ---------------------------------------------------------------------------------------------- GloVe
def test_load_glove_neighbours(glove_file):
    glove = load_glove(glove_file)
    assert glove.neighbours("dogs", 2) == ["puppies", "hounds"]
    assert glove.neighbours("birds", 1) == ["sparrows"]
    assert "dogs" not in glove.neighbours("dogs", 100) and len(glove.neighbours("dogs", 100)) == 7
    assert glove.neighbours("unseen", 3) == []
    assert glove.vectors.shape == (8, 3)
    small = load_glove(glove_file, max_words=3)
    assert small.words == ("dogs", "puppies", "hounds") and small.neighbours("birds", 2) == []


def test_load_glove_word2vec_header(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("3 2\na 1 0\nb 0.9 0.1\nc 0 1\n", encoding="utf-8")
    assert load_glove(path).neighbours("a", 2) == ["b", "c"]


def test_multi_piece_words_take_glove_neighbours(piece_tokenizer, glove_file):
    model = _mlm(len(piece_tokenizer))
    example = {"text_a": "the dogs sees birds", "text_b": None, "label": 1}
    glove = load_glove(glove_file)
    out = augment_examples([example], "sst2", model, piece_tokenizer, n_copies=6, p=1.0, k=2, glove=glove)
    for copy_ in copies_of(out, 6):
        the, dogs, sees, birds = copy_["text_a"].split()
        assert the == "the" and dogs in ("puppies", "hounds") and birds in ("sparrows", "finches")
        # "sees" is wordpiece 3 (after the, dog, ##s): a single piece, so its candidates come from the MLM
        assert sees in direct_candidates(model, piece_tokenizer, "the dogs sees birds", 3, k=2, word="sees")
    # without GloVe, multi-piece words are kept
    out = augment_examples([example], "sst2", model, piece_tokenizer, n_copies=3, p=1.0, k=2)
    assert all(c["text_a"].split()[1::2] == ["dogs", "birds"] for c in copies_of(out, 3))


# ---------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("task", list(TASKS))
def test_write_round_trip_every_layout(tmp_path, task):
    examples = synthetic_examples(task, "train", 6, seed=3)
    path = write_augmented_tsv(task, examples, tmp_path / DIRECTORIES[task] / "train.tsv")
    assert read_tsv(task, path) == examples
    assert load_local(task, tmp_path, "train") == examples
    assert [p.name for p in path.parent.iterdir()] == ["train.tsv"]  # no temp file left behind
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (task == "mrpc")
    first = raw.decode("utf-8-sig").splitlines()[0].split("\t")
    if task in HEADERS:  # the official column order, so index-based readers (TinyBERT) work too
        assert tuple(first) == HEADERS[task]
    elif task == "cola":
        gold = FILE_LABELS["cola"][examples[0]["label"]]
        assert first[1] == gold and first[2] == ("*" if gold == "0" else "") and first[3] == examples[0]["text_a"]
    else:
        assert len(first) == 12 and first[8:10] == ["sentence1", "sentence2"] and first[-1] == "gold_label"


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_augmented_round_trip(tmp_path, mlm, tokenizer, task):
    out = augment_examples(synthetic_examples(task, "train", 3, seed=0), task, mlm, tokenizer, n_copies=2)
    path = write_augmented_tsv(task, out, tmp_path / "train_aug.tsv")
    assert read_tsv(task, path) == out


def test_write_is_atomic_and_cleans_texts(tmp_path):
    path = tmp_path / "train.tsv"
    write_augmented_tsv("rte", [PAIR], path)
    before = path.read_bytes()
    bad = [PAIR, {**PAIR, "label": 2}]
    with pytest.raises(ValueError, match=r"example 1: label 2 of 'rte' must be an id in 0\.\.1"):
        write_augmented_tsv("rte", bad, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]
    write_augmented_tsv("sst2", [{"text_a": "a\tb\nc", "text_b": None, "label": 0}], path)
    assert read_tsv("sst2", path) == [{"text_a": "a b c", "text_b": None, "label": 0}]


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="example 0 has no text_b, but 'rte' is a pair task"):
        write_augmented_tsv("rte", [{"text_a": "x", "text_b": None, "label": 0}], tmp_path / "a.tsv")
    with pytest.raises(ValueError, match="label 'high' of regression task 'stsb' must be a finite number"):
        write_augmented_tsv("stsb", [{"text_a": "x", "text_b": "y", "label": "high"}], tmp_path / "a.tsv")
    with pytest.raises(ValueError, match="unknown task 'sst'; did you mean 'sst2'"):
        write_augmented_tsv("sst", [], tmp_path / "a.tsv")


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"task": "sst"}, "unknown task 'sst'; did you mean 'sst2'"),
    ({"p": 1.5}, r"p=1.5 must be a probability in \[0, 1\]"),
    ({"p": -0.1}, r"p=-0.1 must be a probability in \[0, 1\]"),
    ({"p": float("nan")}, r"p=nan must be a probability"),
    ({"k": 0}, "k=0 must be an integer >= 1"),
    ({"n_copies": -1}, "n_copies=-1 must be an integer >= 0"),
    ({"seed": 1.5}, "seed=1.5 must be an integer"),
    ({"max_seq_length": 3}, "max_seq_length=3 must be an integer >= 4"),
    ({"max_seq_length": 1024}, "max_seq_length=1024 exceeds the MLM's max_position_embeddings=512"),
    ({"max_batch_tokens": 0}, "max_batch_tokens=0 must be an integer >= 1"),
    ({"task": "rte"}, "example 0 does not fit task 'rte', whose examples are sentence pairs"),
])
def test_argument_errors(mlm, tokenizer, kwargs, message):
    args = {"examples": [{"text_a": SENTENCE, "text_b": None, "label": 0}], "task": "sst2", "mlm_model": mlm,
            "tokenizer": tokenizer} | kwargs
    with pytest.raises(ValueError, match=message):
        augment_examples(**args)


def test_tokenizer_errors(mlm, tokenizer):
    no_mask = copy.deepcopy(tokenizer)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="tokenizer BertTokenizer has no mask token"):
        augment_examples([PAIR], "rte", mlm, no_mask)
    slow = types.SimpleNamespace(mask_token_id=4, cls_token_id=2, sep_token_id=3, is_fast=False)
    with pytest.raises(ValueError, match="is not a fast tokenizer"):
        augment_examples([PAIR], "rte", mlm, slow)


def test_glove_errors(tmp_path, glove_file):
    missing = tmp_path / "nowhere" / "glove.6B.300d.txt"
    with pytest.raises(ValueError, match=f"GloVe file '{missing}' not found"):
        load_glove(missing)
    with pytest.raises(ValueError, match="max_words=0 must be an integer >= 1"):
        load_glove(glove_file, max_words=0)
    with pytest.raises(ValueError, match="k=0 must be an integer >= 1"):
        load_glove(glove_file).neighbours("dogs", 0)
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: expected a word and 2 numbers, found 2 fields"):
        load_glove(bad)
    bad.write_text("a 1 2\nb 1 x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: the vector of 'b' is not 2 numbers"):
        load_glove(bad)
    bad.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no vectors"):
        load_glove(bad)


def test_progress_is_logged(mlm, tokenizer, caplog):
    examples = synthetic_examples("sst2", "train", 3, seed=0)
    with caplog.at_level("INFO", logger=augment.__name__):
        augment_examples(examples, "sst2", mlm, tokenizer, n_copies=1, log_every=1)
    assert any("augmented 3/3 sst2 examples" in r.getMessage() for r in caplog.records)


def test_read_back_from_path_object(tmp_path):
    assert isinstance(write_augmented_tsv("sst2", [], str(tmp_path / "e.tsv")), Path)


# ---------------------------------------------------------------------------------------------- xtc augment: shards
@pytest.fixture
def augment_inputs(tmp_path, tokenizer, mlm):
    """A saved masked LM with its tokenizer and a glue_data/ folder with 10 RTE train pairs."""
    from textdata import write_glue_tsv

    mlm.save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    write_glue_tsv(tmp_path / "glue", "rte", "train", 10, seed=5)
    return tmp_path


def _augment(inputs: Path, out: Path, **kwargs):
    from xtc.commands import AugmentRequest
    from xtc.commands import augment as run

    request = AugmentRequest(task="rte", mlm=str(inputs / "mlm"), out=out, data_dir=str(inputs / "glue"), copies=2,
                             device="cpu", shard_examples=3, **kwargs)
    return run(request)


def test_augment_killed_and_resumed_is_byte_identical(augment_inputs, monkeypatch):
    """A job killed after two of four shards continues from the third and writes the same bytes as one run."""
    whole = augment_inputs / "whole.tsv"
    _augment(augment_inputs, whole)
    assert not whole.with_name("whole.tsv.parts").exists()  # the parts are removed once joined

    calls, real = [], augment.augment_examples

    def killed_after_two(examples, *args, **kwargs):
        calls.append(kwargs["start"])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # as a SIGTERM'd job: no cleanup of what was written
        return real(examples, *args, **kwargs)

    resumed = augment_inputs / "resumed.tsv"
    monkeypatch.setattr(augment, "augment_examples", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _augment(augment_inputs, resumed)
    parts = sorted(p.name for p in resumed.with_name("resumed.tsv.parts").iterdir())
    assert parts == ["part-00000.tsv", "part-00001.tsv", "request.json"] and not resumed.exists()

    calls.clear()
    monkeypatch.setattr(augment, "augment_examples", lambda *a, **k: calls.append(k["start"]) or real(*a, **k))
    _augment(augment_inputs, resumed)
    assert calls == [6, 9]  # only the shards the killed job had not finished
    assert resumed.read_bytes() == whole.read_bytes()
    assert len(read_tsv("rte", resumed)) == 10 * 3


def test_augment_parts_of_another_request_are_discarded(augment_inputs, monkeypatch):
    out = augment_inputs / "aug.tsv"
    parts = out.with_name("aug.tsv.parts")
    parts.mkdir()
    (parts / "request.json").write_text('{"seed": 99}')
    (parts / "part-00000.tsv").write_text("stale\trows\n")
    _augment(augment_inputs, out)
    assert "stale" not in out.read_text() and not parts.exists()


def test_augment_runs_the_mlm_on_the_given_device(augment_inputs, monkeypatch):
    """The masked LM is moved to the job's device and every batch it sees is too (a spy on the moves)."""
    from transformers import BertForMaskedLM

    moved, seen = [], []
    to = BertForMaskedLM.to

    def spy_to(self, *args, **kwargs):
        moved.append(torch.device(args[0] if args else kwargs["device"]))
        return to(self, *args, **kwargs)

    forward = BertForMaskedLM.forward

    def spy_forward(self, **inputs):
        seen.append({value.device for value in inputs.values() if isinstance(value, torch.Tensor)})
        return forward(self, **inputs)

    monkeypatch.setattr(BertForMaskedLM, "to", spy_to)
    monkeypatch.setattr(BertForMaskedLM, "forward", spy_forward)
    _augment(augment_inputs, augment_inputs / "aug.tsv")
    assert moved == [torch.device("cpu")] and seen and all(devices == {torch.device("cpu")} for devices in seen)
