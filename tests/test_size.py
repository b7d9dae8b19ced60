"""Size accounting (docs/method.md, "Model size"): BERT-base counts, both compression conventions, exact file sizes."""

from __future__ import annotations

import pytest
import torch
from test_export import CASES

from xtc.config import QuantConfig, Recipe
from xtc.models import bert_config, random_model, tiny_bert_config
from xtc.packed.export import export_packed, predict_packed_bytes
from xtc.packed.size import size_from_config, size_report
from xtc.quant import quantize_
from xtc.reduce import build_student

# Reference section 8, BERT-base.
LINEAR_PER_LAYER = 7_077_888
FP_PER_LAYER = 9_984
WORD_EMBEDDINGS = 23_440_896
POSITION, TOKEN_TYPE, EMBEDDING_LN, POOLER = 393_216, 1_536, 1_536, 590_592
BERT_BASE_PARAMS = 109_482_240  # without the classifier
CLASSIFIER_2_LABELS = 768 * 2 + 2


def test_bert_base_parameter_counts_match_the_reference():
    r12, r11 = size_from_config(bert_config("bert-base"), 12, 1), size_from_config(bert_config("bert-base"), 11, 1)
    teacher = r12["teacher"]
    assert teacher["params_without_head"] == BERT_BASE_PARAMS
    assert teacher["params"] == BERT_BASE_PARAMS + CLASSIFIER_2_LABELS
    assert round(BERT_BASE_PARAMS * 4 / 2**20, 1) == 417.6
    assert teacher["quantized_part_params"] == 12 * LINEAR_PER_LAYER + WORD_EMBEDDINGS
    assert r12["student"]["quantized_part_params"] - r11["student"]["quantized_part_params"] == LINEAR_PER_LAYER
    assert r12["student"]["remainder_params"] - r11["student"]["remainder_params"] == FP_PER_LAYER
    assert r12["student"]["remainder_params"] == (
        12 * FP_PER_LAYER + POSITION + TOKEN_TYPE + EMBEDDING_LN + POOLER + CLASSIFIER_2_LABELS)


@pytest.mark.parametrize(
    ("layers", "bits", "part", "whole"),
    [(12, 1, (31.0, 32.0), (23.5, 24.5)), (5, 1, (50.0, 60.0), (37.0, 39.0)), (6, 1, (50.0, 53.0), (34.0, 36.0)),
     (12, 2, (15.5, 16.0), (13.0, 14.5)), (5, 2, (29.0, 30.0), (22.5, 23.5))],
)
def test_bert_base_compression_ratios(layers, bits, part, whole):
    report = size_from_config(bert_config("bert-base"), layers, bits)
    assert part[0] <= report["compression"]["quantized_part"] <= part[1]
    assert whole[0] <= report["compression"]["whole_model"] <= whole[1]
    assert report["packed_predicted_over_theoretical"] <= 1.01
    assert report["student"]["bits"] == dict.fromkeys(
        ("word_embeddings", "qkv", "attn_out", "ffn_in", "ffn_out"), bits)


def _without_zeros(model):
    """The prediction assumes no exact-zero binary code: fill the zero padding row, and the few exact zeros that
    normal init draws at BERT-base scale (a 1-layer BERT-base has 5 in its embeddings and linears)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p[p == 0] = 0.01
    return model


@pytest.mark.parametrize("cfg", [CASES["W1A8"], CASES["W3-asymmetric-no-act"], CASES["mixed-1-2-2"]],
                         ids=["W1A8", "W3-asym", "mixed"])
def test_predicted_file_size_is_exact(cfg, tmp_path):
    model = _without_zeros(random_model(tiny_bert_config(hidden_size=48, intermediate_size=80, vocab_size=99)))
    quantize_(model, cfg)
    recipe = Recipe(quant=cfg)
    info = export_packed(model, tmp_path / "m.safetensors", recipe=recipe)
    assert info["file_bytes"] == predict_packed_bytes(model, recipe) == (tmp_path / "m.safetensors").stat().st_size


def test_size_from_config_predicts_a_real_student_file_exactly(tmp_path):
    config = tiny_bert_config(num_hidden_layers=6)
    student = build_student(_without_zeros(random_model(config)), [1, 3, 5])
    quantize_(student, QuantConfig(weight_bits=2))
    info = export_packed(student, tmp_path / "s.safetensors")
    predicted = size_from_config(config, 3, 2)
    assert predicted["packed_file_bytes_predicted"] == info["file_bytes"]
    real = size_report(student, tmp_path / "s.safetensors", teacher_config=config)
    assert real["packed_file_bytes"] == info["file_bytes"]
    assert real["theoretical_bytes"] == predicted["theoretical_bytes"]
    assert real["compression"]["quantized_part"] == predicted["compression"]["quantized_part"]


def test_real_bert_base_shaped_file_is_within_one_percent_of_the_minimum(tmp_path):
    """One BERT-base layer with the full 30522 x 768 word embeddings (the largest tensor), 1-bit, real file."""
    model = _without_zeros(random_model(bert_config("bert-base", num_hidden_layers=1)))
    quantize_(model, QuantConfig(weight_bits=1))
    info = export_packed(model, tmp_path / "base.safetensors")
    report = size_report(model, tmp_path / "base.safetensors")
    assert report["student"]["quantized_part_params"] == LINEAR_PER_LAYER + WORD_EMBEDDINGS
    scales = (6 + 30522) * 4
    assert report["theoretical_bytes"]["quantized_part"] == (LINEAR_PER_LAYER + WORD_EMBEDDINGS) / 8 + scales
    assert report["packed_over_theoretical"] <= 1.01
    assert info["file_bytes"] == predict_packed_bytes(model)


def test_size_report_of_a_reduced_student_needs_the_teacher_config(tiny_bert):
    student = build_student(tiny_bert, [1, 3])
    with pytest.raises(ValueError, match="layer-reduced student .* pass teacher_config"):
        size_report(student)
    report = size_report(student, teacher_config=tiny_bert.config)
    per_layer, word_embeddings = 4 * 32 * 32 + 2 * 32 * 64, 128 * 32  # qkv + attn_out, ffn_in + ffn_out
    expected = (4 * per_layer + word_embeddings) / (2 * per_layer + word_embeddings)
    assert report["compression"]["quantized_part"] == pytest.approx(expected)  # an FP student: reduction only


def test_size_from_config_of_an_fp_student():
    report = size_from_config(tiny_bert_config(), None, None)
    assert report["compression"]["quantized_part"] == 1.0 and report["compression"]["whole_model"] == 1.0
