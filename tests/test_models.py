"""Label order of a given teacher (xtc.models, "label order"): generic names, another order, names that do not match."""

from __future__ import annotations

import pytest
import torch

from xtc.models import align_labels, label_permutation, set_task_labels
from xtc.models import random_model, tiny_bert_config

MNLI = ("entailment", "neutral", "contradiction")


def _classifier(id2label: dict[int, str] | None = None, num_labels: int = 3):
    model = random_model(tiny_bert_config(num_labels=num_labels), seed=0).eval()
    if id2label is not None:
        model.config.id2label = dict(id2label)
        model.config.label2id = {name: i for i, name in id2label.items()}
    return model


def _batch():
    ids = torch.randint(5, 128, (4, 9), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_generic_names_are_read_as_dataset_order():
    model = _classifier()  # LABEL_0, LABEL_1, LABEL_2
    assert label_permutation(model.config.id2label, "mnli") is None
    before = model(**_batch()).logits
    align_labels(model, "mnli")
    assert torch.equal(model(**_batch()).logits, before)
    assert model.config.id2label == dict(enumerate(MNLI))


def test_task_names_in_another_order_are_remapped_to_dataset_order():
    # a teacher whose output 0 is "contradiction", 1 "entailment", 2 "neutral" (upper case, as some hub models)
    model = _classifier({0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"})
    before = model(**_batch()).logits
    assert label_permutation(model.config.id2label, "mnli") == [1, 2, 0]
    align_labels(model, "mnli", "teacher org/mnli")
    after = model(**_batch()).logits
    assert torch.equal(after, before[:, [1, 2, 0]])  # column j is now dataset label j = MNLI[j]
    assert model.config.id2label == dict(enumerate(MNLI))
    assert model.config.label2id == {name: i for i, name in enumerate(MNLI)}
    same = _classifier({0: "entailment", 1: "neutral", 2: "contradiction"})
    assert label_permutation(same.config.id2label, "mnli") is None  # the task's names in the task's order


def test_names_that_cannot_be_matched_are_refused():
    model = _classifier({0: "yes", 1: "maybe", 2: "no"})
    with pytest.raises(ValueError, match=r"teacher org/x names its labels \['yes', 'maybe', 'no'\], which do not "
                                         r"match task 'mnli'.*set the model's config.json id2label"):
        align_labels(model, "mnli", "teacher org/x")
    with pytest.raises(ValueError, match=r"has 2 \(\['entailment', 'not_entailment'\]\)"):
        label_permutation(model.config.id2label, "rte")


def test_finetuned_teacher_gets_the_task_label_names_and_regression_is_left_alone():
    model = _classifier(num_labels=2)
    set_task_labels(model, "rte")
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    stsb = _classifier(num_labels=1)
    before = dict(stsb.config.id2label)
    assert align_labels(stsb, "stsb") is stsb and stsb.config.id2label == before


def test_commands_name_a_finetuned_teachers_labels_and_align_a_given_one(tmp_path, capsys):
    """Through the CLI: `xtc finetune` writes the task's names; `xtc evaluate` of the same teacher with its label
    order permuted (rows and names) gives the same metrics; unmatched names stop with a one-line error."""
    import json

    from textdata import tiny_tokenizer, write_glue_tsv

    from xtc.checkpoint import load_model_dir, load_tokenizer, save_model_dir
    from xtc.cli import main

    for split, n in (("train", 16), ("validation", 24)):
        write_glue_tsv(tmp_path / "glue", "rte", split, n, seed=4)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    random_model(tiny_bert_config(vocab_size=len(tokenizer), num_hidden_layers=2), seed=0).save_pretrained(
        tmp_path / "pretrained")
    tokenizer.save_pretrained(tmp_path / "pretrained")
    data = ["--task", "rte", "--data-dir", str(tmp_path / "glue"), "--max-seq-length", "32"]
    assert main(["finetune", "--model", str(tmp_path / "pretrained"), *data, "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "teacher")]) == 0
    config = json.loads((tmp_path / "teacher" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}

    def evaluate(model_dir) -> int:
        capsys.readouterr()
        return main(["evaluate", "--model", str(model_dir), *data])

    assert evaluate(tmp_path / "teacher") == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["accuracy"] != 0.5  # else the flipped head below would score the same without any remapping
    swapped = load_model_dir(tmp_path / "teacher" / "model")
    with torch.no_grad():
        swapped.classifier.weight.copy_(swapped.classifier.weight.flip(0))
        swapped.classifier.bias.copy_(swapped.classifier.bias.flip(0))
    swapped.config.id2label = {0: "NOT_ENTAILMENT", 1: "ENTAILMENT"}
    swapped.config.label2id = {"NOT_ENTAILMENT": 0, "ENTAILMENT": 1}
    save_model_dir(swapped, tmp_path / "swapped", load_tokenizer(tmp_path / "teacher" / "model"))
    assert evaluate(tmp_path / "swapped") == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == metrics
    swapped.config.id2label = {0: "yes", 1: "no"}
    swapped.config.label2id = {"yes": 0, "no": 1}
    save_model_dir(swapped, tmp_path / "unknown", load_tokenizer(tmp_path / "teacher" / "model"))
    assert evaluate(tmp_path / "unknown") == 2
    assert "names its labels ['yes', 'no'], which do not match task 'rte'" in capsys.readouterr().err
