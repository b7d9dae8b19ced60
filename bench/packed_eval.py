"""Serving a trained W1A8 student on CPU: the packed checkpoint vs the fake-quant model.

One W1A8 student (a random BERT quantized by ``quantize_`` with the XTC recipe, marked with ``mark_quantized`` as
``xtc distill`` does) is saved twice in a temporary directory, as training and export leave it:

* the FP32 checkpoint, ``xtc.checkpoint.save_model_dir`` (latent FP32 weights in safetensors; what ``model/`` of a
  run holds), reloaded by ``load_model_dir`` as the fake-quant model, which re-quantizes its weights on every forward;
* the packed file, ``xtc.packed.export.export_packed`` (1-bit codes 8 per byte), reloaded by ``xtc.packed.load``, which
  returns ``PackedLinear``/``PackedEmbedding`` modules holding the dequantized weights once.

Evaluation throughput: forward only, eval mode, ``no_grad``, one fixed batch; examples/s = batch / median seconds,
both models interleaved round by round; the logits must be equal (``torch.equal``), as ``xtc.packed.export`` promises.
Load time: ``xtc.packed.load(file)`` vs ``load_model_dir(dir)``, interleaved, files just written (warm page cache), so
it times deserialization and model construction, not the disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.kd_step import FULL, QUICK, XTC_W1A8, Setting, features, teacher_model, xtc_student
from bench.timing import interleaved_samples, summary
from xtc.checkpoint import load_model_dir, mark_quantized, save_model_dir
from xtc.collate import PaddingCollator
from xtc.packed import load as load_packed
from xtc.packed.export import export_packed

PACKED = "model.xtc.safetensors"
EVAL_BATCH = {False: 32, True: 16}  # examples per forward: full, quick


def _forward(model, inputs):
    def run() -> None:
        with torch.no_grad():
            model(**inputs)

    return run


def run(quick: bool = False, setting: Setting | None = None, eval_batch: int | None = None) -> dict:
    setting = setting or (QUICK if quick else FULL)
    eval_batch = eval_batch or EVAL_BATCH[quick]
    torch.manual_seed(0)
    student = xtc_student(teacher_model(setting)).eval()
    mark_quantized(student, XTC_W1A8)  # as xtc distill does: the model dir reloads as the fake-quant model
    batch = PaddingCollator(0)(features(Setting(eval_batch, setting.seq, setting.rounds, setting.model),
                                       student.config.vocab_size))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with tempfile.TemporaryDirectory(prefix="xtc-bench-") as tmp:
        packed_path, model_dir = Path(tmp) / PACKED, Path(tmp) / "model"
        written = export_packed(student, packed_path)
        save_model_dir(student, model_dir)
        load = summary(interleaved_samples({"packed": lambda: load_packed(packed_path),
                                            "fp32_dir": lambda: load_model_dir(model_dir)},
                                           setting.rounds, warmup=1), "packed", "fp32_dir")
        packed, fake = load_packed(packed_path), load_model_dir(model_dir)
        fp32_dir_bytes = sum(p.stat().st_size for p in model_dir.iterdir())
    with torch.no_grad():
        logits_equal = torch.equal(packed(**inputs).logits, fake(**inputs).logits)
    speed = summary(interleaved_samples({"packed": _forward(packed, inputs), "fake_quant": _forward(fake, inputs)},
                                        setting.rounds, warmup=1), "fake_quant", "packed")
    per_s = {name: round(eval_batch / seconds, 2) for name, seconds in speed["medians"].items()}
    return {
        "what": "W1A8 student: eval throughput (forward, no_grad) of xtc.packed.load's model vs the fake-quant model, "
                "and load time of the packed file vs the FP32 checkpoint dir",
        "method": "interleaved rounds, ratio of medians; eval on one fixed batch of eval_batch x seq tokens; loads "
                  "from a warm page cache (files just written)",
        "setting": setting.describe(), "eval_batch": eval_batch, "threads": torch.get_num_threads(),
        "examples_per_s": per_s, "packed_over_fake_quant_throughput": speed["ratio"],
        "throughput_round_ratio_quartiles": speed["round_ratio_quartiles"], "logits_equal": logits_equal,
        "load_s": {"packed": round(load["medians"]["packed"], 4), "fp32_dir": round(load["medians"]["fp32_dir"], 4)},
        "packed_over_fp32_dir_load": load["ratio"], "load_round_ratio_quartiles": load["round_ratio_quartiles"],
        "bytes": {"packed": written["file_bytes"], "fp32_dir": fp32_dir_bytes},
    }

