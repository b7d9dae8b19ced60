"""A study's serving report: its packed students on the integer engine against the FP32 teachers, in one job.

For each distinct student architecture of a study (depth, weight and activation bits) one packed file is served:
the first run of that architecture in grid order (the speed of a model does not depend on its task's data or seed).
It runs on the integer engine (``xtc.packed.load(path, engine="int8")``), its task's teacher as the FP32
model the workflow trained it from (``xtc.models.load_fp_teacher``: a run dir, a model dir or a hub id). All models take the same fixed batch of
``batch x seq`` random token ids (every position real, no padding: the cost of a full batch), forward only, under
``inference_mode``; the candidates alternate round by round after one warm-up round (which also compiles the
engine's kernels) and each one's figure is its median round.

Memory is the bytes of the model's tensors after the warm-up (parameters and buffers, each storage once: FP32
weights for the teacher; int8 codes, scales, packed embedding rows and float LayerNorms/biases for the engine).
It is not the process RSS: that needs a fresh process per model (``python -m bench --only serve`` measures it so,
docs/performance.md, "Serving"). Speed varies from machine to machine and run to run, so the report stays out of
the study's tables, which must not change between identical runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

SCHEMA = "xtc-serving-report/2"  # 2: machine is an object (CPU model, instruction sets, threads)
# cpuinfo flag -> recorded name: the instruction sets that decide which int8 kernels oneDNN, FBGEMM and ONNX Runtime's
# MLAS pick (and whether torch._int_mm has a fast path), so a speed figure is only comparable beside them
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


def _cpuinfo(text: str | None = None) -> tuple[str | None, set[str]]:
    """``(model name, flags)`` of the first processor in ``/proc/cpuinfo`` (or of ``text``)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def machine(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine a speed figure was taken on: CPU model, instruction sets, cores, torch threads and versions."""
    model, flags = _cpuinfo(cpuinfo)
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {"cpu": model or platform.processor() or platform.machine(), "arch": platform.machine(),
            "isa": {name: flag in flags for flag, name in ISA_FLAGS.items()},
            "torch_cpu_capability": capability, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def isa_line(block: Mapping[str, Any]) -> str:
    """One line for summaries: ``Intel(R) Xeon(R) ..., AVX2 yes, AVX512-VNNI yes, AMX no, 2 threads``."""
    isa, yes = block["isa"], {True: "yes", False: "no"}
    return (f"{block['cpu']}, AVX2 {yes[isa['avx2']]}, AVX512-VNNI {yes[isa['avx512_vnni']]}, "
            f"AMX {yes[isa['amx_int8']]}, {block['threads']} thread{'' if block['threads'] == 1 else 's'}")


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each underlying storage counted once (an opaque oneDNN tensor,
    the engine's prepacked weight on AMX, by its elements: its blocked layout's padding is not visible)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_mkldnn:
            total += tensor.numel() * tensor.element_size()
            continue
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def _batch(model: nn.Module, batch: int, seq: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (batch, seq), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs)
    return time.perf_counter() - start


def measure(teachers: Mapping[str, str], students: Sequence[Mapping[str, str]], batch: int, seq: int,
            rounds: int = 5) -> dict[str, Any]:
    """``teachers``: task -> FP32 model dir; ``students``: ``{"label", "task", "packed"}`` each. Returns the report."""
    from xtc.models import load_fp_teacher
    from xtc.study.rundir import model_dir
    from xtc.packed import load
    from xtc.quant.int8 import engine_status

    if rounds < 1 or batch < 1 or seq < 1:
        raise ValueError(f"rounds={rounds}, batch={batch}, seq={seq}: each must be >= 1")
    missing = sorted({s["task"] for s in students} - set(teachers))
    if missing:
        raise ValueError(f"no teacher given for task(s) {missing}: every student's task needs its FP32 teacher")
    models, loads = {}, {}
    for task, path in teachers.items():
        start = time.perf_counter()
        models[f"teacher:{task}"] = load_fp_teacher(model_dir(path))[0].eval()
        loads[f"teacher:{task}"] = time.perf_counter() - start
    for student in students:
        start = time.perf_counter()
        models[student["label"]] = load(student["packed"], engine="int8")
        loads[student["label"]] = time.perf_counter() - start
    max_positions = min(m.config.max_position_embeddings for m in models.values())
    if seq > max_positions:
        raise ValueError(f"seq={seq} exceeds the models' max_position_embeddings ({max_positions}); use a shorter seq")
    inputs = {name: _batch(model, batch, seq) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds + 1):  # round 0 warms up (and compiles the engine's kernels)
        for name, model in models.items():
            elapsed = _forward(model, inputs[name])
            if round_:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    teacher_rows = {task: {"model": str(path), "sentences_per_s": round(batch / median[f"teacher:{task}"], 2),
                           "tensor_bytes": tensor_bytes(models[f"teacher:{task}"]),
                           "load_s": round(loads[f"teacher:{task}"], 3)}
                    for task, path in teachers.items()}
    rows = []
    for student in students:
        name, teacher = student["label"], f"teacher:{student['task']}"
        size = Path(student["packed"]).stat().st_size
        rows.append({
            "model": name, "task": student["task"], "packed": str(student["packed"]),
            "packed_mib": round(size / 2**20, 3),
            "sentences_per_s": round(batch / median[name], 2),
            "speedup_vs_fp32": round(median[teacher] / median[name], 3),
            "tensor_bytes": tensor_bytes(models[name]),
            "memory_ratio_vs_fp32": round(tensor_bytes(models[name]) / tensor_bytes(models[teacher]), 3),
            "load_s": round(loads[name], 3),
        })
    return {"schema": SCHEMA, "batch": batch, "seq": seq, "rounds": rounds, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": machine(),
            "kernels": engine_status(), "teachers": teacher_rows, "students": rows}


def _mib(row: Mapping[str, Any]) -> str:
    return f"{row['tensor_bytes'] / 2**20:.2f}"


def markdown(report: Mapping[str, Any], study: str) -> str:
    """The report as a Markdown page (what ``results/serving/<study>.md`` holds)."""
    lines = [f"# Serving report: {study}", "",
             f"Forward only on CPU, batch {report['batch']} x {report['seq']} tokens, {report['threads']} thread(s), "
             f"median of {report['rounds']} interleaved rounds; torch {report['torch']}. Students run on the "
             "integer engine from their packed files; memory is the models' tensor bytes (not process RSS). "
             "Machine-dependent: not part of the study's tables.", "",
             f"Machine: {isa_line(report['machine'])}.", "",
             "| model | task | packed file MiB | sentences/s | speed-up vs FP32 teacher | tensor MiB | "
             "memory vs FP32 teacher | load s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for task, row in report["teachers"].items():
        lines.append(f"| FP32 teacher | {task} | | {row['sentences_per_s']} | 1.0 | {_mib(row)} | 1.0 | "
                     f"{row['load_s']} |")
    for row in report["students"]:
        lines.append(f"| {row['model']} | {row['task']} | {row['packed_mib']} | {row['sentences_per_s']} | "
                     f"{row['speedup_vs_fp32']} | {_mib(row)} | {row['memory_ratio_vs_fp32']} | "
                     f"{row['load_s']} |")
    kernels = report.get("kernels") or {}
    if kernels:
        lines += ["", "Engine kernels: " + ", ".join(f"{k} {v}" for k, v in kernels.items()) + "."]
    return "\n".join(lines) + "\n"


def write(report: Mapping[str, Any], study: str, json_path: str | Path, md_path: str | Path) -> None:
    from xtc.atomic import atomic_write_text

    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write_text(md_path, markdown(report, study))
