"""``xtc calibrate``: time a few real steps of each job kind of a study on this device, for the cost model.

Part of the workflow's wing (``xtc.study``) and importable without torch, like the rehearsal: torch and the
training code are imported when a calibration runs.

Random-weight models of the study's shape (``xtc.study.cost.study_shape``: the teacher's config, BERT-base for the paper
studies) run the training code itself -- ``Trainer._train_step`` with the study's KD variant, quantized students
built by ``build_student`` and ``quantize_`` -- on batches of the study's size and padded length (random token
ids). Per kind it records samples per second, FLOPs per sample (``xtc.study.cost``) and, on CUDA, the peak memory:

* ``finetune:L:fp``: teacher fine-tuning (labels only); ``distill:L:fp`` step 1, ``distill:L:1`` / ``distill:L:2``
  step 2 (W1A8 / W2A8) with KD from the teacher; ``eval:L:fp`` a forward under ``no_grad`` at the
  evaluation batch; ``augment:12:fp`` the masked LM's rows (``xtc.augment``);
* ``startup``: what every job pays before its first step, in a fresh process (``time_startup``): the interpreter
  and a training job's imports, loading one model directory of the study's shape, and a packed export.

The result is one entry of ``config/calibration.json`` under the device's name (``xtc.device.device_name``);
an entry of the same shape, batch, length, threads and TF32 setting is replaced. ``xtc plan`` and the workflow's
runtime requests read it (``xtc.study.cost.find_rates``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from xtc.atomic import atomic_write_json
from xtc.study.cost import CALIBRATION, Shape, forward_flops, kind_key, read_calibration, train_flops

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
EVAL_BATCH = 128  # xtc.train.evaluate's batch


def study_kinds(settings, jobs) -> list[str]:
    """The kinds a study's jobs run: its teacher fine-tuning, each (depth, bits) of its students, the evaluations
    at each depth, augmentation."""
    teacher_layers, kinds = settings["teacher"]["layers"], []
    from xtc.study.grid import teacher_given

    if any(not teacher_given(settings, t) for t in jobs.tasks):
        kinds.append(kind_key("finetune", teacher_layers))
    kinds += sorted({kind_key("distill", row["layers"], row["wbits"]) for row in jobs.runs.values()})
    kinds += sorted({kind_key("eval", n) for n in {teacher_layers, *(r["layers"] for r in jobs.runs.values())}})
    if jobs.augmented():
        from xtc.study.cost import model_shape

        kinds.append(kind_key("augment", model_shape(settings["augment"]["mlm"]).layers))
    return kinds


def grid_kinds(layers: Iterable[int], teacher_layers: int) -> list[str]:
    """FP, W1A8 and W2A8 at each depth (step 1 only below the teacher's), and their evaluations."""
    kinds = []
    for n in layers:
        kinds += [kind_key("distill", n, bits) for bits in (("fp",) if n < teacher_layers else ()) + ("1", "2")]
        kinds.append(kind_key("eval", n))
    return kinds


def _config(shape: Shape, layers: int, labels: int = 3):
    from xtc.models import bert_config

    return bert_config("bert-base", vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=layers,
                       num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                       max_position_embeddings=shape.positions, type_vocab_size=shape.types, num_labels=labels)


def _features(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (n, seq), generator=g).tolist()
    return [{"input_ids": row, "token_type_ids": [0] * seq, "attention_mask": [1] * seq, "labels": i % 3}
            for i, row in enumerate(ids)]


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, warmup: int, steps: int, step) -> tuple[float, int | None]:
    """Seconds per call of ``step`` after ``warmup`` calls, and the peak CUDA memory (None on CPU)."""
    import torch

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - started) / steps
    return seconds, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def time_kind(kind: str, shape: Shape, teacher_layers: int, batch: int, seq: int, device: torch.device,
              steps: int, warmup: int, tf32: bool, kd: str = "one_stage", mlm_shape: Shape | None = None) -> dict:
    """Samples per second (and peak memory) of one kind, measured with the training code itself."""
    from xtc.collate import PaddingCollator
    from xtc.config import DistillConfig, QuantConfig, TrainConfig
    from xtc.distill import layer_maps
    from xtc.models import random_model
    from xtc.quant import quantize_
    from xtc.reduce import build_student, select_layers
    from xtc.train import Trainer
    from xtc.train import evaluate as evaluate_model

    job, layers, bits = kind.split(":")
    layers = int(layers)
    collate = PaddingCollator(0)
    if job == "augment":
        return _time_augment(mlm_shape or Shape(), device, steps, warmup, seq)
    if job == "eval":
        model = random_model(_config(shape, layers)).to(device)
        features = _features(EVAL_BATCH, seq, shape.vocab)
        sets = {"validation_matched": features}
        seconds, peak = _timed(device, warmup, steps,
                               lambda: evaluate_model(model, "mnli", sets, collate, EVAL_BATCH, device))
        return {"samples_per_s": EVAL_BATCH / seconds, "flops_per_sample": forward_flops(shape, layers, seq),
                "peak_memory_bytes": peak}
    train_cfg = TrainConfig(batch_size=batch, epochs=1.0, tf32=tf32, eval_every_steps=10**9)
    features = _features(batch * (warmup + steps), seq, shape.vocab)
    if job == "finetune":
        model, teacher, maps = random_model(_config(shape, layers)), None, None
        distill_cfg = DistillConfig(kd="none")
    else:
        teacher = random_model(_config(shape, teacher_layers), seed=1)
        chosen = select_layers(teacher_layers, layers, "xtc")
        model = build_student(teacher, chosen)
        if bits != "fp":
            quantize_(model, QuantConfig(weight_bits=int(bits), act_bits=8))
        maps, distill_cfg = layer_maps(chosen, teacher_layers), DistillConfig(kd=kd)
    trainer = Trainer(model, "mnli", features, {"validation_matched": features[:batch]}, collate, train_cfg,
                      distill_cfg, teacher=teacher, maps=maps, device=device, progress=False)
    trainer._start()
    stage = trainer.stages[0]
    batches = iter([features[i:i + batch] for i in range(0, len(features), batch)])
    seconds, peak = _timed(device, warmup, steps, lambda: trainer._train_step(stage, next(batches)))
    flops = train_flops(shape, layers, seq, None if job == "finetune" else teacher_layers)
    return {"samples_per_s": batch / seconds, "flops_per_sample": flops, "peak_memory_bytes": peak}


def _time_augment(mlm_shape: Shape, device: torch.device, steps: int, warmup: int, seq: int) -> dict:
    """Masked-LM rows per second: rows of ``2 x sentence + 3`` tokens, as many as fit ``AUGMENT_ROW_TOKENS``."""
    import torch
    from transformers import BertForMaskedLM

    from xtc.study.cost import AUGMENT_ROW_TOKENS

    mlm = BertForMaskedLM(_config(mlm_shape, mlm_shape.layers)).to(device).eval()
    row = min(2 * max(seq // 4, 8) + 3, 512)
    rows = max(AUGMENT_ROW_TOKENS // row, 1)
    ids = torch.randint(min(1000, mlm_shape.vocab // 2), mlm_shape.vocab, (rows, row)).to(device)  # (B, T)

    def step():
        with torch.inference_mode():
            logits = mlm(input_ids=ids).logits  # (B, T, V)
            logits[:, 1].topk(15, dim=-1)

    seconds, peak = _timed(device, warmup, steps, step)
    flops = forward_flops(mlm_shape, mlm_shape.layers, row) + 2 * mlm_shape.hidden * mlm_shape.vocab * row
    return {"samples_per_s": rows / seconds, "flops_per_sample": flops, "peak_memory_bytes": peak, "row_tokens": row}


# A job's fixed cost, timed in a fresh process as a job pays it: the interpreter and the imports of a training job,
# loading one model directory of the study's shape, and exporting a W1A8 student of it packed.
_STARTUP_CHILD = """
import json, sys, time
started = time.perf_counter()
import torch, transformers, xtc.commands, xtc.distill, xtc.train
from xtc.checkpoint import load_model_dir
from xtc.config import QuantConfig
from xtc.packed.export import export_packed
from xtc.quant import quantize_
imported = time.perf_counter()
model = load_model_dir(sys.argv[1])
loaded = time.perf_counter()
quantize_(model, QuantConfig(weight_bits=1))
export_packed(model, sys.argv[2])
print(json.dumps({"imports_s": imported - started, "load_s": loaded - imported,
                  "export_s": time.perf_counter() - loaded}))
"""


def time_startup(shape: Shape, teacher_layers: int) -> dict:
    """``imports_s`` (interpreter start included), ``load_s`` (one model directory of the teacher's shape) and
    ``export_s`` (quantize and write it packed), measured in a fresh process, median of three."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from xtc.checkpoint import save_model_dir
    from xtc.models import random_model

    runs = []
    with tempfile.TemporaryDirectory(prefix="xtc-calibrate-") as tmp:
        save_model_dir(random_model(_config(shape, teacher_layers)), Path(tmp) / "model")
        for _ in range(3):
            spawned = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", _STARTUP_CHILD, str(Path(tmp) / "model"),
                                   str(Path(tmp) / "model.xtc.safetensors")], capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"the start-up timing child failed: {done.stderr[-2000:]}")
            timing = json.loads(done.stdout.strip().splitlines()[-1])
            total = time.perf_counter() - spawned
            timing["imports_s"] = total - timing["load_s"] - timing["export_s"]  # the interpreter's start too
            runs.append(timing)
    return {key: round(sorted(r[key] for r in runs)[1], 3) for key in ("imports_s", "load_s", "export_s")}


def calibrate(shape: Shape, teacher_layers: int, kinds: Sequence[str], batch: int, seq: int, device: torch.device,
              steps: int = 3, warmup: int = 1, tf32: bool = False, out: Path = CALIBRATION,
              mlm_shape: Shape | None = None) -> dict:
    """Time every kind, then write (or replace) this device's entry in the calibration file; return the entry."""
    import torch

    from xtc.device import device_info, device_name

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    measured = {}
    for kind in kinds:
        started = time.perf_counter()
        measured[kind] = time_kind(kind, shape, teacher_layers, batch, seq, device, steps, warmup, tf32,
                                   mlm_shape=mlm_shape)
        peak = measured[kind]["peak_memory_bytes"]
        log.info("%s: %.1f samples/s%s (%.0f s)", kind, measured[kind]["samples_per_s"],
                 f", peak {peak / 2**30:.2f} GiB" if peak else "", time.perf_counter() - started)
    startup = time_startup(shape, teacher_layers)
    log.info("start-up: imports %.1f s, a model load %.1f s, an export %.1f s", startup["imports_s"],
             startup["load_s"], startup["export_s"])
    info = device_info(device, tf32=tf32)
    name = device_name(device)
    entry = {"shape": shape.key(), "batch_size": batch, "seq_length": seq, "threads": torch.get_num_threads(),
             "tf32": info["tf32"], "torch": torch.__version__, "cuda": torch.version.cuda, "steps": steps,
             "measured": datetime.now(UTC).strftime("%Y-%m-%d"), "kinds": measured, "startup": startup}
    data = read_calibration(out)
    same = ("shape", "batch_size", "seq_length", "threads", "tf32")
    entries = [e for e in data["devices"].get(name, []) if any(e[k] != entry[k] for k in same)]
    data["devices"][name] = [*entries, entry]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, data)
    log.info("calibration of %s written to %s", name, out)
    return entry


def study_calibration(configfile: str, device: torch.device, layers: Sequence[int] | None = None,
                      steps: int = 3, warmup: int = 1, tf32: bool = False, out: Path = CALIBRATION,
                      threads: int | None = None) -> dict:
    """Calibrate the kinds of a study file (or, with ``layers``, FP/W1A8/W2A8 at those depths) on ``device``."""
    import torch

    from xtc.study.cost import model_shape, padded_length, study_shape
    from xtc.study.plan import load

    plan = load(configfile)
    settings = plan.settings
    if threads is None and device.type == "cpu":
        threads = settings["resources"]["threads"]
    if threads:
        torch.set_num_threads(threads)
    shape = study_shape(settings)
    kinds = study_kinds(settings, plan.jobs)
    if layers:  # FP/W1A8/W2A8 at these depths, and the study's augmentation
        kinds = grid_kinds(layers, settings["teacher"]["layers"]) + [k for k in kinds if k.startswith("augment")]
    seq = math.ceil(max(padded_length(settings, t, 0) for t in plan.jobs.tasks))
    entry = calibrate(shape, settings["teacher"]["layers"], kinds, settings["data"]["batch_size"], seq, device,
                      steps, warmup, tf32, out, model_shape(settings["augment"]["mlm"]))
    from xtc.device import device_name

    return {"device": device_name(device), **entry}
