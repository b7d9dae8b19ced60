"""`xtc predict` reads GLUE files as GLUE files, refuses what its model cannot read, and says so in one line."""

from __future__ import annotations

import io

import pytest
import torch
from textdata import tiny_tokenizer, write_glue_tsv

from xtc.cli import main
from xtc.config import DataConfig, QuantConfig, Recipe
from xtc.glue import read_tsv
from xtc.models import random_model, tiny_bert_config
from xtc.packed.export import export_packed
from xtc.packed.predict import read_texts
from xtc.quant import quantize_


def _read(path, task=None, columns=None):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return read_texts(handle, columns, str(path), task)


def _texts(path, task):
    return [(e["text_a"], e["text_b"]) for e in read_tsv(task, path)]


# ---------------------------------------------------------------------------------------------- GLUE files
def test_sst2_dev_and_test_files_are_read_as_sentences(tmp_path):
    dev = write_glue_tsv(tmp_path, "sst2", "validation", 9, seed=1)  # sentence<TAB>label, with a header
    assert _read(dev, "sst2") == _texts(dev, "sst2") and len(_read(dev, "sst2")) == 9
    test = tmp_path / "test.tsv"  # GLUE's SST-2 test file: an index column, no label
    test.write_text("index\tsentence\n0\tit 's a charming journey .\n1\tbad .\n")
    assert _read(test, "sst2") == [("it 's a charming journey .", None), ("bad .", None)]


def test_header_less_cola_files_are_read_by_their_layout(tmp_path):
    dev = write_glue_tsv(tmp_path, "cola", "validation", 7, seed=1)  # source, label, original label, sentence
    assert _read(dev, "cola") == _texts(dev, "cola") and len(_read(dev, "cola")) == 7
    plain = tmp_path / "plain.txt"
    plain.write_text("the cat sees a dog .\nthe dog runs\n")
    assert _read(plain, "cola") == [("the cat sees a dog .", None), ("the dog runs", None)]


def test_an_mrpc_file_is_read_as_pairs(tmp_path):
    dev = write_glue_tsv(tmp_path, "mrpc", "validation", 6, seed=1)  # five columns, a BOM before the header
    assert _read(dev, "mrpc") == _texts(dev, "mrpc") and all(b is not None for _, b in _read(dev, "mrpc"))
    assert _read(dev, "rte", columns=["#1 String", "#2 String"]) == _texts(dev, "mrpc")


@pytest.mark.parametrize("lines, task, message", [
    ("the cat\tsees a dog\n", "sst2", "input, line 1: a sentence pair, but the model's task 'sst2' reads one sentence "
                                      "a line"),
    ("the cat sees a dog\n", "rte", "input, line 1: one sentence, but the model's task 'rte' reads sentence pairs"),
    ("the cat\t1\n", None, "input, line 1: 2 tab-separated fields, and the model records no task, so they could be a "
                           "sentence pair or a sentence and its label (as in SST-2's dev.tsv); pass --task"),
    ("sentence\nthe cat\n", None, "input, line 1: 'sentence' looks like a GLUE header; pass --columns sentence"),
    ("a\tb\tc\n", "sst2", "input, line 1: 3 tab-separated fields; a line holds one text or a pair"),
    ("the cat\t1\n", "sst2", "input, line 1: a sentence pair, but the model's task 'sst2'"),  # a header-less dev file
    ("a\x00b\n", "sst2", "input, line 1: a NUL byte, which no text holds (a UTF-16 or binary file?); give a UTF-8"),
    ("\ufeffa\n\x00\n", None, "input, line 2: a NUL byte"),
    ("a" * 200_000 + "\n", "sst2", "input, line 1: field larger than field limit (131072) (csv)"),
])
def test_input_the_model_cannot_read_is_refused_in_one_line(lines, task, message):
    with pytest.raises(ValueError) as error:
        read_texts(io.StringIO(lines), task=task)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_columns_must_fit_the_task(tmp_path):
    dev = write_glue_tsv(tmp_path, "mrpc", "validation", 3, seed=1)
    with pytest.raises(ValueError, match="--columns names 1 text column.s., but the model's task 'mrpc' reads 2"):
        _read(dev, "mrpc", columns=["#1 String"])


# ---------------------------------------------------------------------------------------------- the command
@pytest.fixture
def sst2_packed(tmp_path):
    """A tiny W1A8 SST-2 student exported with its recipe (as `xtc export` of a run does), with its tokenizer."""
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).eval()
    quant = QuantConfig(weight_bits=1)
    quantize_(model, quant)
    out = tmp_path / "packed"
    export_packed(model, out / "model.xtc.safetensors", Recipe(data=DataConfig(task="sst2"), quant=quant))
    tokenizer.save_pretrained(out)
    return out / "model.xtc.safetensors"


def test_predict_reads_an_sst2_dev_file_as_its_sentences(sst2_packed, tmp_path, capsys):
    dev = write_glue_tsv(tmp_path / "glue", "sst2", "validation", 12, seed=2)
    assert main(["predict", "--model", str(sst2_packed), "--input", str(dev)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 12  # not 13 pairs: no header row, no label as text


def test_predict_of_the_real_sst2_dev_file_gives_872_predictions(sst2_packed, real_glue, capsys):
    assert main(["predict", "--model", str(sst2_packed), "--input", str(real_glue / "SST-2" / "dev.tsv")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 872


@pytest.mark.parametrize("args, message", [
    (["--task", "rte"], "--task rte contradicts the model {model}, which was trained on 'sst2' (its recipe); drop"),
    (["--task", "mnli"], "--task mnli contradicts the model"),
    (["--max-seq-length", "100"], "--max-seq-length 100 must be at least 2 ([CLS] and [SEP]) and at most the model's "
                                  "max_position_embeddings=64; e.g. --max-seq-length 64"),
    (["--max-seq-length", "0"], "--max-seq-length 0 must be at least 2"),
    (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["--columns", "sentence,label"], "--columns names 2 text column(s), but the model's task 'sst2' reads 1"),
])
def test_predict_settings_are_checked_before_loading(sst2_packed, tmp_path, capsys, monkeypatch, args, message):
    import xtc.packed.predict

    monkeypatch.setattr(xtc.packed.predict, "load_for_prediction", lambda *a: pytest.fail("the model was loaded"))
    dev = write_glue_tsv(tmp_path / "glue", "sst2", "validation", 3, seed=2)
    assert main(["predict", "--model", str(sst2_packed), "--input", str(dev), *args]) == 2
    err = capsys.readouterr().err
    assert message.format(model=sst2_packed) in err and err.count("\n") == 1


def test_a_packed_file_without_its_tokenizer_is_one_line(sst2_packed, tmp_path, capsys):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.xtc.safetensors").write_bytes(sst2_packed.read_bytes())
    (tmp_path / "in.txt").write_text("the cat sees a dog\n")
    assert main(["predict", "--model", str(alone / "model.xtc.safetensors"), "--input", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err
    assert f"no usable tokenizer in {alone} (" in err and "copy the export's whole folder" in err
    assert err.count("\n") == 1


def test_a_recipe_less_packed_file_refuses_ambiguous_input(tmp_path, capsys):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).eval()
    quantize_(model, QuantConfig(weight_bits=1))
    export_packed(model, tmp_path / "packed" / "model.xtc.safetensors")  # no recipe: no task recorded
    tokenizer.save_pretrained(tmp_path / "packed")
    dev = write_glue_tsv(tmp_path / "glue", "sst2", "validation", 5, seed=2)
    args = ["predict", "--model", str(tmp_path / "packed" / "model.xtc.safetensors"), "--input", str(dev)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "and the model records no task" in err and "--task" in err and "--columns" in err and err.count("\n") == 1
    assert main([*args, "--task", "sst2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


# ---------------------------------------------------------------------------------------------- the command
def test_predict_writes_one_label_per_line_like_the_float_model(packed_with_tokenizer, tmp_path, capsys):
    from xtc.cli import main

    packed, dev = packed_with_tokenizer
    args = ["predict", "--model", str(packed), "--input", str(dev), "--columns", "sentence"]
    assert main([*args, "--scores"]) == 0
    int8 = [[float(p) for p in line.split("\t")] for line in capsys.readouterr().out.splitlines()]
    assert main([*args, "--scores", "--engine", "float"]) == 0
    exact = [[float(p) for p in line.split("\t")] for line in capsys.readouterr().out.splitlines()]
    assert len(int8) == len(exact) == 12 and torch.allclose(torch.tensor(int8), torch.tensor(exact), atol=1e-5)
    assert main(args) == 0
    labels = capsys.readouterr().out.splitlines()
    assert labels == [("LABEL_1" if b > a else "LABEL_0") for a, b in int8]
    assert main([*args, "--scores", "--engine", "int8-packed"]) == 0  # weights kept packed: the same numbers
    assert [[float(p) for p in line.split("\t")] for line in capsys.readouterr().out.splitlines()] == int8


def test_predict_reads_header_less_pairs_from_stdin(packed_with_tokenizer, monkeypatch, capsys):
    import io

    from xtc.cli import main

    packed, _ = packed_with_tokenizer
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat\tsees a dog\n\nthe man\tis happy\n"))
    assert main(["predict", "--model", str(packed), "--task", "rte"]) == 0  # the file records no task
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_predict_rejects_lines_of_three_texts(packed_with_tokenizer, monkeypatch, capsys):
    import io

    from xtc.cli import main

    packed, _ = packed_with_tokenizer
    monkeypatch.setattr("sys.stdin", io.StringIO("a\tb\tc\n"))
    assert main(["predict", "--model", str(packed)]) == 2
    assert "line 1: 3 tab-separated fields" in capsys.readouterr().err
