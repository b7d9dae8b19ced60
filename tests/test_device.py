"""xtc.device: a job uses the device it was told or stops at once; the device reaches every tensor and is recorded.

Runs on the CPU: the CUDA check is exercised for real where torch finds no CUDA device (this machine), and the
moves are checked with a spy on ``Module.to`` / ``Tensor.to`` (the device itself is then ``cpu``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from textdata import tiny_tokenizer, write_glue_tsv

from xtc import device as xdevice
from xtc.cli import main
from xtc.models import random_model, tiny_bert_config

TRAIN = ["--task", "rte", "--batch-size", "8", "--lr", "1e-3", "--max-seq-length", "32", "--epochs", "1"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop of a job told cuda on a machine "
                             "without CUDA; this machine has CUDA")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Synthetic RTE, a 4-layer 'pretrained' tiny BERT and a (random) 4-layer teacher with their tokenizer."""
    root = tmp_path_factory.mktemp("device")
    for split, n in (("train", 16), ("validation", 8)):
        write_glue_tsv(root / "glue", "rte", split, n, seed=3)
    tokenizer = tiny_tokenizer(root / "tok")
    for name, seed in (("pretrained", 0), ("teacher", 1)):
        random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.fixture
def no_data_read(monkeypatch):
    """Fail the test if any data, model or tokenizer is read (the check must come first)."""
    import xtc.checkpoint
    import xtc.glue

    def forbidden(*args, **kwargs):
        raise AssertionError("data or a model was read before the device check")

    for module, name in ((xtc.glue, "load_split"), (xtc.glue, "read_tsv"), (xtc.checkpoint, "load_model_dir"),
                         (xtc.checkpoint, "load_tokenizer")):
        monkeypatch.setattr(module, name, forbidden)


@no_cuda
@pytest.mark.parametrize("command", ["finetune", "distill", "evaluate", "augment"])
def test_a_job_told_cuda_without_cuda_stops_in_one_line_before_loading_data(workspace, command, no_data_read,
                                                                            capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    data = ["--data-dir", str(workspace / "glue")]
    argv = {"finetune": ["finetune", "--model", str(workspace / "pretrained"), *TRAIN, *data],
            "distill": ["distill", "--teacher", str(workspace / "teacher"), "--layers", "2", *TRAIN, *data],
            "evaluate": ["evaluate", "--model", str(workspace / "teacher"), "--task", "rte", *data],
            "augment": ["augment", "--task", "rte", "--mlm", str(workspace / "pretrained"), *data]}[command]
    out = workspace / f"out-{command}"
    assert main([*argv, "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"xtc {command}: error: --device cuda: no usable CUDA device")
    assert f"torch {torch.__version__}" in err and "torch.version.cuda is None" in err
    assert "CUDA_VISIBLE_DEVICES='0'" in err and "Fix:" in err and "--device cpu" in err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_the_device_check_names_what_it_found(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(xdevice, "NVIDIA_DRIVER", Path("/nonexistent/driver"))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(xdevice.DeviceError) as err:
        xdevice.require_device("cuda")
    text = str(err.value)
    assert "built for CUDA 12.8" in text and "no NVIDIA driver loaded" in text and "CUDA_VISIBLE_DEVICES unset" in text
    assert "--gpus=1" in text  # the fix for a node without a GPU
    with pytest.raises(xdevice.DeviceError, match=r"--device 'meta': xtc trains on cpu or cuda"):
        xdevice.require_device("meta")
    with pytest.raises(xdevice.DeviceError, match=r"--device 'gpu0' is not a device"):
        xdevice.require_device("gpu0")
    assert xdevice.require_device("cpu") == torch.device("cpu")


class MoveSpy:
    """Records every ``Module.to`` / ``Tensor.to`` and tags each tensor a ``.to`` returns with its target device."""

    def __init__(self, monkeypatch):
        self.modules: list[tuple[torch.nn.Module, torch.device]] = []
        module_to, tensor_to = torch.nn.Module.to, torch.Tensor.to
        spy = self

        def on_module(self, *args, **kwargs):
            target = torch._C._nn._parse_to(*args, **kwargs)[0]
            if target is not None:
                spy.modules.append((self, torch.device(target)))
            return module_to(self, *args, **kwargs)

        def on_tensor(self, *args, **kwargs):
            out = tensor_to(self, *args, **kwargs)
            target = next((a for a in (*args, kwargs.get("device")) if isinstance(a, (str, torch.device))), None)
            if target is not None:
                out.xtc_moved_to = torch.device(target)
            return out

        monkeypatch.setattr(torch.nn.Module, "to", on_module)
        monkeypatch.setattr(torch.Tensor, "to", on_tensor)

    def moved(self, module: torch.nn.Module) -> set[torch.device]:
        return {device for m, device in self.modules if m is module}


def test_training_moves_teacher_student_and_every_batch_to_the_device(workspace, tmp_path, monkeypatch, caplog):
    """Distillation on ``--device cpu``: the teacher and the student are moved there, and every input tensor of
    every forward (train and eval batches, student and teacher) went through ``.to(device)``."""
    import logging

    from xtc import commands

    spy = MoveSpy(monkeypatch)
    forwards: list[tuple[str, set]] = []
    from transformers import BertForSequenceClassification

    forward = BertForSequenceClassification.forward

    def watched(self, *args, **inputs):
        tensors = [v for v in (*args, *inputs.values()) if isinstance(v, torch.Tensor)]
        forwards.append((self.config.num_hidden_layers, {getattr(t, "xtc_moved_to", None) for t in tensors}))
        return forward(self, *args, **inputs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", watched)
    loaded = []
    real_load = commands._load_teacher
    monkeypatch.setattr(commands, "_load_teacher", lambda *a: loaded.append(real_load(*a)) or loaded[-1])
    caplog.set_level(logging.INFO)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(workspace / "teacher"), "--layers", "2", *TRAIN, "--data-dir",
                 str(workspace / "glue"), "--eval-every", "1", "--device", "cpu", "--out", str(out)]) == 0
    teacher = loaded[0][0]
    cpu = torch.device("cpu")
    assert cpu in spy.moved(teacher)
    students = [m for m, d in spy.modules if isinstance(m, BertForSequenceClassification) and m is not teacher]
    assert students and all(d == cpu for m, d in spy.modules if m in students)
    depths = {depth for depth, _ in forwards}
    assert depths == {4, 2}  # the teacher's and the student's forwards were both seen
    assert all(devices == {cpu} for _, devices in forwards), forwards  # every input tensor was moved there
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["device_info"]
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and info["name"].startswith("cpu: ")
    assert info["tf32"] is False and info["bf16"] is False and info["threads"] >= 1
    assert f"device cpu ({info['name']}); torch {torch.__version__}" in caplog.text


def test_device_info_line_names_precision():
    info = xdevice.device_info(torch.device("cpu"), tf32=True, bf16=True)
    assert info["tf32"] is False and info["bf16"] is False  # both act on CUDA only
    assert "tf32 off, bf16 off" in xdevice.describe(info)


def test_the_workflow_device_follows_the_gpu_resource_and_the_override_is_logged(caplog, monkeypatch):
    """`--device` of the training jobs: cuda where the rule holds a GPU, cpu where not; resources.device: cpu
    (the real-SLURM tests' cluster declares a GPU without one) is a logged override, never silent."""
    import logging

    from snakemake.utils import validate

    from xtc.study import grid as study
    from xtc.study.jobs import Jobs

    monkeypatch.delenv("GLUE_DIR", raising=False)

    def jobs(**resources):
        raw = {"study": "t", "teacher": {"model": "no/such-model", "layers": 4}, "grid": {"task": ["rte"], "layers": [2]},
               "resources": resources}
        return Jobs(study.load_studies(raw, "s.yaml", validate=validate))

    caplog.set_level(logging.WARNING, logger="snakemake.xtc")
    assert jobs(gpu=1).device() == "cuda" and jobs(gpu=0).device() == "cpu"
    assert not caplog.text
    assert jobs(gpu=1, device="cpu").device() == "cpu"
    assert "resources.device = cpu: the jobs request gpu=1 but train on CPU" in caplog.text
    tiny = yaml.safe_load((Path(__file__).resolve().parent.parent / ".test" / "config.yaml").read_text())
    assert tiny["resources"]["device"] == "cpu" and "gpu" not in tiny["resources"]  # gpu=1 by default
