"""Serving on CPU: the FP32 model vs the W1A8 fake-quant student vs the integer engine (``xtc.packed.engine``).

For each depth (full mode: BERT-base shapes at 12 and 6 layers, random weights; quick mode: BERT-base width at 2
layers) three files are written to a temporary directory, as the workflow leaves them: the FP32 model directory
(``save_model_dir``, what a teacher run holds), the W1A8 student's directory (latent FP32 weights; reloaded by
``load_model_dir`` as the fake-quant model) and its packed file (``export_packed``; reloaded by
``xtc.packed.load(path, engine="int8")``, and as ``engine_packed`` by ``xtc.packed.load(path, engine="int8-packed")``, which
keeps the weight codes packed in memory and unpacks each layer's per forward). Each candidate is loaded from its
file.

* Throughput: forward only, eval mode, ``inference_mode``, one fixed batch of ``batch x seq`` tokens (full: 32 x 128)
  and the latency batch 1 x 128; the three candidates alternate round by round; sentences/s = batch / median.
* Numerics: the engine's logits against the fake-quant model's: max abs difference, the fake-quant model's own
  change under another thread count (its float-rounding noise), ``xtc.packed.engine.logit_bound`` and whether every
  prediction whose fake-quant margin exceeds twice the bound is equal.
* Model memory: each candidate in a fresh process (``python -m bench.serve CANDIDATE PATH ...``): RSS after the
  imports (and, for the engine, after its kernels are compiled: a per-process cost, not the model's), then
  load + ``steps`` forwards of the throughput batch; model memory = peak RSS (``VmHWM`` reset after the baseline)
  minus that baseline. The load time of each candidate is timed in the parent, interleaved.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import memory
from bench.kd_step import XTC_W1A8, Setting, features, teacher_model, xtc_student
from bench.timing import interleaved_samples, summary

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = ("fp32", "fake_quant", "engine", "engine_packed")
ENGINE_OF = {"engine": "int8", "engine_packed": "int8-packed"}  # candidate -> xtc.packed.load(engine=...)
FULL = {"depths": (12, 6), "batch": 32, "seq": 128, "rounds": 3, "latency_rounds": 5}
QUICK = {"depths": (2,), "batch": 8, "seq": 128, "rounds": 2, "latency_rounds": 3}


def load(candidate: str, path: str | Path):
    """The candidate model from its file (the loaders a user calls)."""
    from xtc.checkpoint import load_model_dir
    from xtc.packed import load as load_packed

    if candidate in ENGINE_OF:
        return load_packed(path, engine=ENGINE_OF[candidate])
    return load_model_dir(path).eval()


def write_files(setting: Setting, out: Path) -> dict[str, Path]:
    from xtc.checkpoint import mark_quantized, save_model_dir
    from xtc.packed.export import export_packed

    torch.manual_seed(0)
    teacher = teacher_model(setting)
    paths = {"fp32": out / "fp32", "fake_quant": out / "student", "engine": out / "model.xtc.safetensors"}
    paths["engine_packed"] = paths["engine"]
    save_model_dir(teacher, paths["fp32"])
    student = xtc_student(teacher).eval()
    del teacher
    mark_quantized(student, XTC_W1A8)  # as xtc distill does: the directory reloads as the fake-quant model
    save_model_dir(student, paths["fake_quant"])
    export_packed(student, paths["engine"])
    return paths


def _inputs(setting: Setting, vocab: int, batch: int) -> dict[str, torch.Tensor]:
    from xtc.collate import PaddingCollator

    rows = features(dataclasses.replace(setting, batch=batch), vocab)
    return {k: v for k, v in PaddingCollator(0)(rows).items() if k != "labels"}


def _forward(model, inputs):
    def run() -> None:
        with torch.inference_mode():
            model(**inputs)

    return run


def _numerics(engine, fake, inputs, engine_packed=None) -> dict:
    from xtc.packed.engine import logit_bound

    threads = torch.get_num_threads()
    with torch.inference_mode():
        got, want = engine(**inputs).logits, fake(**inputs).logits
        packed_equal = None if engine_packed is None else torch.equal(engine_packed(**inputs).logits, got)
        torch.set_num_threads(1 if threads > 1 else 2)  # the same model, another summation order
        try:
            noise = float((fake(**inputs).logits - want).abs().max())
        finally:
            torch.set_num_threads(threads)
    bound = logit_bound(want, noise)
    top2 = want.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * bound
    same = bool((got.argmax(-1) == want.argmax(-1))[clear].all())
    return {"max_abs_logit_diff": float((got - want).abs().max()), "max_abs_logit": float(want.abs().max()),
            "fake_quant_float_noise": noise, "bound": bound, "within_bound":
            float((got - want).abs().max()) <= bound, "predictions_equal_beyond_margin": same,
            "engine_packed_logits_equal_engine": packed_equal}


def _depth(depth: int, mode: dict, measure_memory: bool) -> dict:
    from xtc.quant.int8 import compile_status

    model = (*mode.get("model", ()), ("num_hidden_layers", depth))
    setting = Setting(mode["batch"], mode["seq"], mode["rounds"], model)
    with tempfile.TemporaryDirectory(prefix="xtc-serve-") as tmp:
        paths = write_files(setting, Path(tmp))
        load_samples = interleaved_samples({c: (lambda c=c: load(c, paths[c])) for c in CANDIDATES},
                                           mode["rounds"], warmup=1)
        loads = summary(load_samples, "engine", "fp32")
        models = {c: load(c, paths[c]) for c in CANDIDATES}
        mem = _memory(paths, setting) if measure_memory else {}
    vocab = models["fp32"].config.vocab_size
    result: dict = {"load_s": {c: round(s, 4) for c, s in loads["medians"].items()},
                    "engine_load_ratio_vs_fp32": loads["ratio"],
                    "engine_packed_load_ratio_vs_fp32": summary(load_samples, "engine_packed", "fp32")["ratio"]}
    for batch, rounds, key in ((mode["batch"], mode["rounds"], "throughput"), (1, mode["latency_rounds"], "latency")):
        inputs = _inputs(setting, vocab, batch)
        if key == "throughput":
            result["numerics"] = _numerics(models["engine"], models["fake_quant"], inputs, models["engine_packed"])
        samples = interleaved_samples({c: _forward(m, inputs) for c, m in models.items()}, rounds, warmup=1)
        speed = summary(samples, "fp32", "engine")
        figures = {f"{c}_sentences_per_s": round(batch / s, 2) for c, s in speed["medians"].items()}
        figures.update({f"{c}_ms": round(1000 * s, 1) for c, s in speed["medians"].items()} if key == "latency" else {})
        figures["engine_speedup_vs_fp32"] = speed["ratio"]
        figures["engine_speedup_round_quartiles"] = speed["round_ratio_quartiles"]
        packed = summary(samples, "fp32", "engine_packed")
        figures["engine_packed_speedup_vs_fp32"] = packed["ratio"]
        figures["engine_packed_speedup_round_quartiles"] = packed["round_ratio_quartiles"]
        figures["fake_quant_speedup_vs_fp32"] = summary(samples, "fp32", "fake_quant")["ratio"]
        result[f"{key}_{batch}x{mode['seq']}"] = figures
    if mem:
        result["memory"] = mem
        for c in CANDIDATES[1:]:
            result[f"{c}_memory_ratio_vs_fp32"] = round(mem[c]["model_mib"] / mem["fp32"]["model_mib"], 3)
    result["kernels"] = compile_status()
    return result


def _memory(paths: dict[str, Path], setting: Setting, steps: int = 1) -> dict:
    """Each candidate in its own fresh process, one after the other (``main`` below is the child)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = {}
    for candidate in CANDIDATES:
        args = [sys.executable, "-m", "bench.serve", candidate, str(paths[candidate]), str(setting.batch),
                str(setting.seq), str(steps)]
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"serve memory child {candidate} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        results[candidate] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def run(quick: bool = False, mode: dict | None = None, measure_memory: bool = True) -> dict:
    mode = mode or (QUICK if quick else FULL)
    depths = {f"{d}L": _depth(d, mode, measure_memory) for d in mode["depths"]}
    head = depths[f"{max(mode['depths'])}L"]
    result = {
        "what": "sentences/s, latency, model memory and load time of the FP32 model, the W1A8 fake-quant student "
                "and the integer engine (load_packed(engine='int8'); engine_packed: engine='int8-packed', weights "
                "kept packed in memory), BERT-base width, random weights",
        "method": "throughput: interleaved rounds, ratio of medians, inference_mode; memory: fresh process per "
                  "candidate, peak RSS minus RSS after imports; loads interleaved, warm page cache",
        "mode": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()}, "threads":
            torch.get_num_threads(), "depths": depths,
        "engine_speedup_vs_fp32": head[f"throughput_{mode['batch']}x{mode['seq']}"]["engine_speedup_vs_fp32"],
        "engine_packed_speedup_vs_fp32":
            head[f"throughput_{mode['batch']}x{mode['seq']}"]["engine_packed_speedup_vs_fp32"],
        "engine_load_ratio_vs_fp32": head["engine_load_ratio_vs_fp32"],
        "numerics_within_bound": all(d["numerics"]["within_bound"] for d in depths.values()),
    }
    if measure_memory:
        result["engine_memory_ratio_vs_fp32"] = head["engine_memory_ratio_vs_fp32"]
        result["engine_packed_memory_ratio_vs_fp32"] = head["engine_packed_memory_ratio_vs_fp32"]
    return result


# ---------------------------------------------------------------------------------------------- the child
def _model_type(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return json.loads((path / "config.json").read_text())["model_type"]
    from xtc.packed.format import read_header

    return read_header(path)["model_config"]["model_type"]


def child(candidate: str, path: str, batch: int, seq: int, steps: int) -> dict:
    import transformers  # noqa: F401  (imports are part of the baseline, not of the model)
    # the model's own modules (transformers imports them lazily, ~55 MiB for BERT) belong to the baseline too
    importlib.import_module(f"transformers.models.{_model_type(path)}.modeling_{_model_type(path)}")

    import xtc.checkpoint  # noqa: F401
    import xtc.packed.engine  # noqa: F401
    import xtc.packed.export  # noqa: F401
    from xtc.quant.int8 import enable_compiled

    if candidate in ENGINE_OF:
        enable_compiled()  # compile once per process: the process's cost, not the model's
    memory._release_free_memory()
    baseline = memory._status_kib("VmRSS")
    reset = memory._reset_peak()
    started = time.perf_counter()
    model = load(candidate, path)
    load_s = time.perf_counter() - started
    vocab = model.config.vocab_size
    ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    peak = memory._status_kib("VmHWM") if reset else None
    if peak is None or baseline is None:
        raise RuntimeError("no /proc/self/clear_refs or /proc/self/status here: the serve memory figure needs Linux")
    return {"after_imports_mib": round(baseline / 1024, 1), "peak_mib": round(peak / 1024, 1),
            "model_mib": round((peak - baseline) / 1024, 1), "load_s_in_child": round(load_s, 3)}


if __name__ == "__main__":
    candidate, path, batch, seq, steps = sys.argv[1:6]
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(json.dumps(child(candidate, path, int(batch), int(seq), int(steps))))
