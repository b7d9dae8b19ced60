"""The serving report (xtc/packed/serving.py): a study's packed students on the integer engine against the FP32 teachers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from xtc.checkpoint import mark_quantized, save_model_dir
from xtc.config import QuantConfig
from xtc.models import random_model, tiny_bert_config
from xtc.packed.export import export_packed
from xtc.packed.serving import markdown, measure, tensor_bytes, write
from xtc.quant import int8 as int8_module
from xtc.quant import quantize_


@pytest.fixture(autouse=True)
def _eager_kernels(monkeypatch):
    monkeypatch.setenv(int8_module.COMPILE_ENV, "0")  # compiling costs ~a minute on a cold 2-core box
    int8_module.reset_kernels()
    yield
    int8_module.reset_kernels()


def test_tensor_bytes_counts_each_storage_once():
    linear = nn.Linear(3, 4)
    assert tensor_bytes(linear) == (3 * 4 + 4) * 4
    tied = nn.Module()
    tied.a, tied.b = linear, nn.Linear(3, 4)
    tied.b.weight = linear.weight  # shared: counted once
    assert tensor_bytes(tied) == (3 * 4 + 4 + 4) * 4
    codes = nn.Module()
    codes.register_buffer("codes", torch.zeros(5, 7, dtype=torch.int8))
    assert tensor_bytes(codes) == 35


def _files(tmp_path):
    config = tiny_bert_config(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2,
                              vocab_size=512)
    teacher = random_model(config, seed=0).eval()
    save_model_dir(teacher, tmp_path / "teacher")
    students = []
    for bits in (1, 2):
        student = random_model(config, seed=bits)
        cfg = QuantConfig(weight_bits=bits, act_bits=8)
        quantize_(student, cfg)
        mark_quantized(student, cfg)
        path = tmp_path / f"w{bits}.xtc.safetensors"
        export_packed(student.eval(), path)
        students.append({"label": f"W{bits}A8 2L", "task": "sst2", "packed": str(path)})
    return {"sst2": str(tmp_path / "teacher")}, students


def test_report_serves_every_student_against_its_teacher(tmp_path):
    teachers, students = _files(tmp_path)
    report = measure(teachers, students, batch=4, seq=16, rounds=2)
    assert (report["batch"], report["seq"], report["rounds"]) == (4, 16, 2)
    assert report["schema"] == "xtc-serving-report/2" and set(report["machine"]["isa"]) >= {"avx2", "avx512_vnni",
                                                                                             "amx_int8"}
    teacher = report["teachers"]["sst2"]
    assert [row["model"] for row in report["students"]] == ["W1A8 2L", "W2A8 2L"]
    for row in report["students"]:
        assert row["speedup_vs_fp32"] > 0 and row["sentences_per_s"] > 0
        # int8 codes (1 byte) instead of FP32 weights (4 bytes), float norms, biases and position embeddings
        assert 0.1 < row["memory_ratio_vs_fp32"] < 0.6
        assert row["memory_ratio_vs_fp32"] == round(row["tensor_bytes"] / teacher["tensor_bytes"], 3)
        assert row["packed_mib"] > 0
    write(report, "demo", tmp_path / "out/serving.json", tmp_path / "out/serving.md")
    assert json.loads((tmp_path / "out/serving.json").read_text()) == report
    page = (tmp_path / "out/serving.md").read_text()
    assert page == markdown(report, "demo") and "| W1A8 2L | sst2 |" in page and "| FP32 teacher | sst2 |" in page
    assert f"Machine: {report['machine']['cpu']}, AVX2 " in page


def test_bad_plans_are_refused_before_loading(tmp_path):
    teachers, students = _files(tmp_path)
    with pytest.raises(ValueError, match=r"no teacher given for task\(s\) \['mrpc'\]"):
        measure(teachers, [{**students[0], "task": "mrpc"}], batch=2, seq=8)
    with pytest.raises(ValueError, match="rounds=0"):
        measure(teachers, students, batch=2, seq=8, rounds=0)
    with pytest.raises(ValueError, match="seq=4096 exceeds the models' max_position_embeddings"):
        measure(teachers, students, batch=2, seq=4096)
