"""xtc.study.calibrate: each job kind of a study timed with the training code on this device; the plan reads it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from textdata import tiny_tokenizer, write_glue_tsv

from xtc.cli import main
from xtc.models import random_model, tiny_bert_config
from xtc.study import cost, plan


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    for split, n in (("train", 16), ("validation", 8)):
        write_glue_tsv(tmp_path / "glue", "rte", split, n, seed=3)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    for name, layers, positions in (("pre", 4, 64), ("mlm", 2, 512)):
        random_model(tiny_bert_config(vocab_size=len(tokenizer), num_hidden_layers=layers,
                                      max_position_embeddings=positions)).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    raw = {"study": "cal", "teacher": {"model": str(tmp_path / "pre"), "layers": 4, "epochs": 1},
           "data": {"glue_dir": str(tmp_path / "glue"), "max_seq_length": 32, "batch_size": 8},
           "augment": {"mlm": str(tmp_path / "mlm"), "copies": 1},
           "grid": {"task": ["rte"], "layers": [4, 2], "wbits": [1, 2], "da": [0, 1]},
           "resources": {"gpu": 0, "threads": 1}}
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def test_calibrate_times_every_kind_and_the_plan_reads_it(tiny_study, capsys):
    out = tiny_study / "calibration.json"
    before = plan.load("cal.yaml", calibration=out)
    assert before.costs.rates.note == cost.DEFAULT_NOTE
    assert main(["calibrate", "--configfile", "cal.yaml", "--device", "cpu", "--steps", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["device"].startswith("cpu: ") and entry["seq_length"] == 32 and entry["batch_size"] == 8
    assert sorted(entry["kinds"]) == ["augment:2:fp", "distill:2:1", "distill:2:2", "distill:2:fp", "distill:4:1",
                                      "distill:4:2", "eval:2:fp", "eval:4:fp", "finetune:4:fp"]
    assert all(k["samples_per_s"] > 0 and k["flops_per_sample"] > 0 for k in entry["kinds"].values())
    after = plan.load("cal.yaml", calibration=out)
    assert after.costs.rates.note.startswith(f"calibrated on {entry['device']}")
    fp2 = entry["kinds"]["distill:2:fp"]
    job = after.costs.train("rte", 2, "fp", 1, 0, teacher=False)
    n = 2490  # the real RTE train split (no data.max_train_examples), 1 epoch
    assert job["seconds"] > n / fp2["samples_per_s"]  # training at the calibrated rate, plus start-up and evals
    startup = entry["startup"]  # timed in a fresh process: what every job pays before its first step
    assert sorted(startup) == ["export_s", "imports_s", "load_s"] and all(v > 0 for v in startup.values())
    assert after.costs.export() == pytest.approx(sum(startup.values()))
    assert after.costs.rates.start_s(2) == pytest.approx(startup["imports_s"] + 2 * startup["load_s"])
    # a second calibration of the same shape, batch, length and threads replaces the entry
    assert main(["calibrate", "--configfile", "cal.yaml", "--device", "cpu", "--steps", "1", "--warmup", "0",
                 "--layers", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())["devices"][entry["device"]]
    assert len(data) == 1 and sorted(data[0]["kinds"]) == ["augment:2:fp", "distill:2:1", "distill:2:2",
                                                           "distill:2:fp", "eval:2:fp"]


def test_calibrate_refuses_cuda_without_cuda(tiny_study, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["calibrate", "--configfile", "cal.yaml", "--device", "cuda", "--out", "c.json"]) == 2
    assert "no usable CUDA device" in capsys.readouterr().err and not (tiny_study / "c.json").exists()
