"""Layer selection and the layer-reduced student (docs/method.md, "Layer reduction")."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoModelForSequenceClassification

from xtc.config import ReduceConfig
from xtc.models import random_model, tiny_bert_config
from xtc.reduce import XTC_LAYERS, build_student, encoder_layers, even_layers, resolve_teacher_layer, select_layers


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------- select_layers
def test_xtc_table_for_a_12_layer_teacher():
    assert select_layers(12, 6) == (1, 3, 5, 7, 9, 11)
    assert select_layers(12, 5) == (2, 4, 6, 8, 10)
    assert select_layers(12, 4) == (1, 4, 7, 10)
    assert select_layers(12, 6, "xtc") == XTC_LAYERS[6]


def test_even_rule_reproduces_the_xtc_spirit():
    assert select_layers(12, 6, "even") == (1, 3, 5, 7, 9, 11)
    assert select_layers(12, 4, "even") == (2, 5, 8, 11)  # XTC's alternative 4-layer choice
    assert select_layers(12, 5, "even") == (1, 3, 6, 8, 11)
    assert select_layers(12, 12, "even") == tuple(range(12))
    assert select_layers(12, 12) == tuple(range(12))


def test_xtc_falls_back_to_even_outside_the_table():
    assert select_layers(4, 2) == (1, 3)
    assert select_layers(12, 3) == (3, 7, 11)
    assert select_layers(24, 6) == even_layers(24, 6) == (3, 7, 11, 15, 19, 23)


@given(n_teacher=st.integers(1, 48), data=st.data())
def test_even_layers_are_increasing_in_range_and_keep_the_top(n_teacher, data):
    n_student = data.draw(st.integers(1, n_teacher))
    layers = even_layers(n_teacher, n_student)
    assert len(layers) == n_student
    assert list(layers) == sorted(set(layers))
    assert 0 <= layers[0] and layers[-1] == n_teacher - 1


def test_explicit_list_is_validated_and_returned():
    assert select_layers(12, None, [2, 5, 8, 11]) == (2, 5, 8, 11)
    assert select_layers(12, 4, (2, 5, 8, 11)) == (2, 5, 8, 11)


def test_resolve_teacher_layer_from_the_recipe():
    assert resolve_teacher_layer(ReduceConfig(), 12) == tuple(range(12))
    assert resolve_teacher_layer(ReduceConfig(layers=6), 12) == (1, 3, 5, 7, 9, 11)
    assert resolve_teacher_layer(ReduceConfig(layers=5, strategy="even"), 12) == (1, 3, 6, 8, 11)
    assert resolve_teacher_layer(ReduceConfig(teacher_layer=(2, 5, 8, 11)), 12) == (2, 5, 8, 11)


@pytest.mark.parametrize(
    "args, message",
    [
        ((12, None, [0, 12]),
         r"teacher_layer=\[0, 12\] contains 12, out of range for a 12-layer teacher; use 0-based indices 0\.\.11"),
        ((12, None, [-1, 3]), r"contains -1, out of range .* 0\.\.11"),
        ((12, None, [1, 3, 3]), r"teacher_layer=\[1, 3, 3\] repeats \[3\]; each teacher layer can be kept once"),
        ((12, None, [5, 1]), r"teacher_layer=\[5, 1\] is not increasing; .* use \[1, 5\]"),
        ((12, None, []), r"teacher_layer=\[\] keeps zero layers"),
        ((12, None, [1.0, 3]), r"contains 1\.0; use 0-based integer layer indices"),
        ((12, 3, [1, 3]), r"has 2 entries but n_student=3"),
        ((12, 0), r"n_student=0: a student needs at least 1 layer; use 1\.\.12"),
        ((4, 6), r"n_student=6 is more layers than the teacher has \(4\); use 1\.\.4"),
        ((0, 1), r"n_teacher=0 must be >= 1"),
        ((12, 2.5), r"n_student=2\.5 must be an integer"),
        ((12, 6, "xtx"), r"layer strategy 'xtx' is not supported.*did you mean 'xtc'\?"),
        ((12, None, "even"), r"strategy 'even' needs n_student"),
    ],
)
def test_select_layers_errors(args, message):
    with pytest.raises(ValueError, match=message):
        select_layers(*args)


# ---------------------------------------------------------------------------------------------- build_student
def test_keeping_all_layers_reproduces_the_teacher_exactly(tiny_bert, tiny_batch):
    student = build_student(tiny_bert, range(4)).eval()
    with torch.no_grad():
        assert torch.equal(student(**tiny_batch).logits, tiny_bert(**tiny_batch).logits)


@pytest.mark.parametrize(
    "n_teacher, teacher_layer", [(4, (1, 3)), (4, (0, 2)), (12, XTC_LAYERS[6]), (12, XTC_LAYERS[5])]
)
def test_student_layers_are_the_chosen_teacher_layers(n_teacher, teacher_layer):
    teacher = random_model(tiny_bert_config(num_hidden_layers=n_teacher), seed=3).eval()
    before = _snapshot(teacher)
    student = build_student(teacher, teacher_layer)
    assert len(encoder_layers(student)) == len(teacher_layer) == student.config.num_hidden_layers
    assert student.config.xtc_teacher_layer == list(teacher_layer)
    for i, t in enumerate(teacher_layer):
        _assert_same_params(encoder_layers(student)[i], encoder_layers(teacher)[t])
    for name in ("embeddings", "pooler"):
        _assert_same_params(getattr(student.bert, name), getattr(teacher.bert, name))
    _assert_same_params(student.classifier, teacher.classifier)
    # The teacher is untouched, and nothing is shared with it.
    assert teacher.config.num_hidden_layers == n_teacher and len(encoder_layers(teacher)) == n_teacher
    assert not hasattr(teacher.config, "xtc_teacher_layer")
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    teacher_ptrs = {p.data_ptr() for p in teacher.parameters()}
    assert not teacher_ptrs & {p.data_ptr() for p in student.parameters()}


def test_student_modules_share_the_students_config(tiny_bert):
    student = build_student(tiny_bert, (1, 3))
    assert student.bert.config is student.config
    for i, layer in enumerate(encoder_layers(student)):
        assert layer.attention.self.config is student.config
        assert layer.attention.self.layer_idx == i


def test_student_runs_and_has_its_own_depth(tiny_bert, tiny_batch):
    student = build_student(tiny_bert, (1, 3)).eval()
    out = student(**tiny_batch, output_hidden_states=True)
    assert out.logits.shape == (3, 2)
    assert len(out.hidden_states) == 3


def test_save_and_load_round_trip(tiny_bert, tiny_batch, tmp_path):
    student = build_student(tiny_bert, (0, 2)).eval()
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(student)
    assert loaded.config.num_hidden_layers == 2
    assert loaded.config.xtc_teacher_layer == [0, 2]
    _assert_same_params(loaded, student)
    with torch.no_grad():
        assert torch.equal(loaded(**tiny_batch).logits, student(**tiny_batch).logits)


def test_build_student_validates_teacher_layer(tiny_bert):
    with pytest.raises(ValueError, match=r"contains 4, out of range for a 4-layer teacher"):
        build_student(tiny_bert, (1, 4))
    with pytest.raises(ValueError, match=r"is not increasing"):
        build_student(tiny_bert, (3, 1))


def test_encoder_layers_needs_bert_module_names():
    with pytest.raises(ValueError, match=r"Linear has no BERT-style encoder .*`<base_model>.encoder.layer`"):
        encoder_layers(torch.nn.Linear(2, 2))
