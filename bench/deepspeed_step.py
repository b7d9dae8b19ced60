"""The W1A8 KD training step: xtc vs DeepSpeed 0.19.6's ``init_compression`` model (the original XTC code), on CPU.

Both candidates run the very same ``xtc.train.Trainer`` step as ``bench/kd_step.py`` (same teacher object, same
batch, same 1-stage KD loss, clipping and AdamW step); only the student differs:

* xtc: a copy of the teacher quantized by ``quantize_(student, QuantConfig(weight_bits=1, act_bits=8))``;
* DeepSpeed: ``init_compression(copy of the teacher, XTC config)`` -- DeepSpeedExamples'
  ``ds_config_W1A8_Qgroup1_fp32.json`` (1-bit weights with one group in the attention, FFN and output linears and
  per-row word embeddings, 8-bit symmetric dynamic activations) -- then one ``compression_scheduler(...).step()``,
  which turns quantization on (offset 0), so it really quantizes (``tests/test_parity_deepspeed.py`` pins that the
  two give the same logits). Its scheduler is stepped once at set-up, not every step: with offset 0 and no
  quantization period it has nothing left to do.

Time: interleaved rounds in this process, ratio of medians ``xtc_over_deepspeed``. The same step with an FP32
student runs as a third candidate: ``fp32_over_deepspeed`` is the floor of ``xtc_over_deepspeed``, the ratio a
fake-quant student would reach if its quantization cost nothing (both runs share everything else). Peak memory: each candidate is
built again in a fresh child process (``bench/memory.py``: one warm-up step, then the kernel's resident-memory
high-water mark over the measured steps), so neither candidate's imports or freed memory count against the other.

``xtc_compiled``: xtc's student with ``train.compile`` (timed as a fourth candidate, compiled before the rounds;
its memory child compiles in its warm-up step): ``xtc_compiled_over_deepspeed`` (target <= 0.7) and
``peak_mib_compiled_over_eager`` (its peak over the eager xtc step's; target <= 1).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import sys
from collections.abc import Callable

import torch
from torch import nn

from bench import memory
from bench.kd_step import FULL, QUICK, Setting, compiled_step, features, kd_step, teacher_model, xtc_student
from bench.timing import interleaved_samples, summary


def xtc_ds_config(weight_bits: int = 1) -> dict:
    """The XTC W{1,2}A8 config of DeepSpeedExamples (compression/bert/config/ds_config_W1A8_Qgroup1_fp32.json)."""
    return {
        "compression_training": {
            "weight_quantization": {
                "shared_parameters": {
                    "enabled": True, "quantizer_kernel": False, "schedule_offset": 0, "quantize_groups": 1,
                    "quantize_verbose": False, "quantization_type": "symmetric", "quantize_weight_in_forward": True,
                    "rounding": "nearest", "fp16_mixed_quantize": {"enabled": False, "quantize_change_ratio": 0.1},
                },
                "different_groups": {
                    "wq1": {
                        "params": {"start_bits": weight_bits, "target_bits": weight_bits, "quantization_period": 0},
                        "modules": ["attention.self", "intermediate", "word_embeddings", "output.dense"],
                    }
                },
            },
            "activation_quantization": {
                "shared_parameters": {
                    "enabled": True, "quantization_type": "symmetric", "range_calibration": "dynamic",
                    "schedule_offset": 0,
                },
                "different_groups": {
                    "aq1": {"params": {"bits": 8}, "modules": ["attention.self", "intermediate", "output.dense"]}
                },
            },
        }
    }


def deepspeed_student(teacher: nn.Module, weight_bits: int = 1) -> nn.Module:
    """DeepSpeed's XTC student: ``init_compression`` on a copy of the teacher, quantization switched on."""
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints on stdout
        from deepspeed.compression.compress import init_compression
        from deepspeed.compression.config import get_compression_config
        from deepspeed.compression.scheduler import compression_scheduler

        config = xtc_ds_config(weight_bits)
        student = init_compression(copy.deepcopy(teacher), config)
        compression_scheduler(student, get_compression_config(config)).step()
    return student.train()


def candidate(name: str, setting: dict) -> Callable[[], None]:
    """The step of one candidate (``xtc``, ``xtc_compiled`` = with ``train.compile``, ``xtc_int8`` = with
    ``train.int8_forward``, or ``deepspeed``), built from scratch: what a memory child runs (its warm-up step
    compiles)."""
    if name not in CANDIDATES:
        raise ValueError(f"unknown candidate {name!r}: use one of {', '.join(CANDIDATES)}")
    setting = Setting.from_dict(setting)
    teacher = teacher_model(setting)
    student = deepspeed_student(teacher) if name == "deepspeed" else xtc_student(teacher)
    return kd_step(student, teacher, features(setting, teacher.config.vocab_size), compile=name == "xtc_compiled",
                   int8_forward=name == "xtc_int8")


CANDIDATES = ("xtc", "xtc_compiled", "xtc_int8", "deepspeed")


def available() -> bool:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed.compression.compress  # noqa: F401
    except ImportError:
        return False
    return True


def run(quick: bool = False, setting: Setting | None = None, memory_steps: int = 1,
        measure_memory: bool = True, compiled: bool = True) -> dict:
    """``compiled``: also time (and measure) xtc's W1A8 step with ``train.compile`` (compiling takes minutes)."""
    setting = setting or (QUICK if quick else FULL)
    if not available():
        return {"skipped": "DeepSpeed is not installed (pip install -e '.[peer]', see pyproject.toml)"}
    torch.manual_seed(0)
    teacher = teacher_model(setting)
    batch = features(setting, teacher.config.vocab_size)
    candidates = {"xtc": kd_step(xtc_student(teacher), teacher, batch),
                  "deepspeed": kd_step(deepspeed_student(teacher), teacher, batch),
                  "fp32": kd_step(xtc_student(teacher, None), teacher, batch),
                  "xtc_int8": kd_step(xtc_student(teacher), teacher, batch, int8_forward=True)}
    if compiled:
        candidates["xtc_compiled"], compile_s = compiled_step(xtc_student(teacher), teacher, batch)
    samples = interleaved_samples(candidates, setting.rounds, warmup=1)
    timing, floor = summary(samples, "xtc", "deepspeed"), summary(samples, "fp32", "deepspeed")
    del teacher, batch, candidates  # the students and their optimizer states (GBs at BERT-base) before the children
    torch._dynamo.reset()  # compiled graphs hold their student
    gc.collect()
    result = {
        "what": "one W1A8 KD training step (as kd_step, AdamW step included): xtc vs DeepSpeed 0.19.6 "
                "init_compression with the XTC config, scheduler enabled; same teacher, batch and loss",
        "method": "time: candidates (xtc, deepspeed, and an FP32 student as the floor) alternate each round (order "
                  "rotating) in one process, ratio of medians; memory: each W1A8 candidate in a fresh child process, "
                  "resident-memory high-water mark over the measured steps after a warm-up step (bench/memory.py)",
        "setting": setting.describe(), "threads": torch.get_num_threads(),
        **{f"{name}_s": round(seconds, 4) for name, seconds in timing["medians"].items()},
        "xtc_over_deepspeed": timing["ratio"], "round_ratio_quartiles": timing["round_ratio_quartiles"],
        "target": "<= 0.8", "fp32_over_deepspeed": floor["ratio"],
    }
    int8 = summary(samples, "xtc_int8", "deepspeed")
    result.update({"xtc_int8_over_deepspeed": int8["ratio"],
                   "int8_round_ratio_quartiles": int8["round_ratio_quartiles"],
                   "int8_target": "<= 0.7 (train.int8_forward=true)"})
    if compiled:
        fast = summary(samples, "xtc_compiled", "deepspeed")
        result.update({"xtc_compiled_over_deepspeed": fast["ratio"],
                       "compiled_round_ratio_quartiles": fast["round_ratio_quartiles"],
                       "compiled_target": "<= 0.7 (train.compile=true)", "compile_first_step_s": round(compile_s, 1)})
    if measure_memory:
        raw = dataclasses.asdict(setting)
        peak = memory.in_children({name: ("bench.deepspeed_step:candidate", {"name": name, "setting": raw})
                                   for name in CANDIDATES if compiled or name != "xtc_compiled"},
                                  memory_steps, threads=torch.get_num_threads())
        result["memory"] = peak
        result["peak_mib_xtc_over_deepspeed"] = round(peak["xtc"]["peak_mib"] / peak["deepspeed"]["peak_mib"], 3)
        if "step_peak_mib" in peak["xtc"]:
            result["step_peak_mib_xtc_over_deepspeed"] = round(
                peak["xtc"]["step_peak_mib"] / peak["deepspeed"]["step_peak_mib"], 3)
        if compiled:
            result["peak_mib_compiled_over_eager"] = round(
                peak["xtc_compiled"]["peak_mib"] / peak["xtc"]["peak_mib"], 3)
        result["peak_mib_int8_over_eager"] = round(peak["xtc_int8"]["peak_mib"] / peak["xtc"]["peak_mib"], 3)
    return result
