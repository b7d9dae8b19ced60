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

The peers (``bench/peers.py``, the serve extra; at the deepest depth only): ONNX Runtime FP32 and dynamic int8 in
three variants, torchao's int8 dynamic-activation model (compiled) and ``torch.ao``'s ``quantize_dynamic``, all built
from the same FP32 model directory in the same run, timed in the same rounds (each candidate a block of calls in a
row per round, the first discarded: ``bench.timing.block_samples``). Their figures sit beside
the engine's, and the engine is compared with the fastest ONNX Runtime int8 variant (``best_ort_int8``): throughput
ratio at the throughput batch, latency ratio at 1 x seq, and resident-memory ratio. Each memory child also reports
cold start (``load_s_in_child`` + ``first_forward_s``: the first 1 x seq forward, kernel compilation included; the
engine's ``compile_s`` is its kernels' compilation, from inductor's on-disk cache after the parent compiled them) and
``resident_mib``: RSS after the load and that first forward with the allocator's free memory returned, minus the
baseline -- the model's weights as they sit in memory once serving (the engine unpacks its codes at first use, ONNX
Runtime prepacks at session creation). ``engine_eager`` is the engine's child with ``XTC_ENGINE_COMPILE=0`` (the
cold start without a C++ compiler). Where the engine's products run on an AMX kernel (xtc's own tile kernel or
oneDNN's prepacked int8 linear, ``xtc.quant.int8.select_matmul``), ``engine_int_mm`` is the same engine on
``torch._int_mm``, timed beside it.
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

from bench import memory, peers
from bench.kd_step import XTC_W1A8, Setting, features, teacher_model, xtc_student
from bench.timing import block_samples, interleaved_samples, summary

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = ("fp32", "fake_quant", "engine", "engine_packed")
ENGINE_OF = {"engine": "int8", "engine_packed": "int8-packed"}  # candidate -> xtc.packed.load(engine=...)
# peers: the peers timed beside the engine at the deepest depth (bench/peers.py)
# calls: per candidate and round, run in a row, the first discarded (bench.timing.block_samples)
FULL = {"depths": (12, 6), "batch": 32, "seq": 128, "rounds": 3, "calls": 2, "latency_rounds": 5,
        "latency_calls": 5, "peers": "available"}
QUICK = {"depths": (2,), "batch": 8, "seq": 128, "rounds": 2, "calls": 2, "latency_rounds": 3, "latency_calls": 4,
         "peers": "available"}
ENGINES = ("engine", "engine_packed")
# where the process's engine runs its products on an AMX kernel (xtc.quant.int8.select_matmul), the same engine on
# torch._int_mm is timed beside it: the kernel's own gain, in the same run
INT_MM = "engine_int_mm"


def load(candidate: str, path: str | Path):
    """The candidate model from its file (the loaders a user calls)."""
    from xtc.checkpoint import load_model_dir
    from xtc.packed import load as load_packed
    from xtc.quant.int8 import Int8Linear

    if candidate in ENGINE_OF:
        return load_packed(path, engine=ENGINE_OF[candidate])
    if candidate == INT_MM:  # the engine with the products on torch._int_mm where the process chose an AMX kernel
        model = load_packed(path, engine="int8")
        for module in model.modules():
            if isinstance(module, Int8Linear):
                module.kernel = "int_mm"  # before first use: it stays
        return model
    if candidate in peers.PEERS:
        return peers.load_peer(candidate, Path(path))
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


def _depth(depth: int, mode: dict, measure_memory: bool, with_peers: bool) -> dict:
    from xtc.quant.int8 import engine_status

    model = (*mode.get("model", ()), ("num_hidden_layers", depth))
    setting = Setting(mode["batch"], mode["seq"], mode["rounds"], model)
    peer_names = tuple(mode.get("peers", ())) if with_peers else ()
    int_mm = (INT_MM,) if engine_status()["matmul"] != "int_mm" else ()
    candidates = CANDIDATES + int_mm + peer_names
    with tempfile.TemporaryDirectory(prefix="xtc-serve-") as tmp:
        paths = write_files(setting, Path(tmp))
        paths[INT_MM] = paths["engine"]
        result: dict = {}
        if peer_names:
            started = time.perf_counter()
            paths.update({k: v for k, v in peers.peer_files(paths["fp32"], Path(tmp) / "peers").items()
                          if k in peer_names})
            result["peer_files_s"] = round(time.perf_counter() - started, 1)
            result["peer_files"] = {c: {"bytes": _bytes(paths[c]), **({"ops": peers.op_counts(paths[c])}
                                                                      if c in peers.ORT_PEERS else {})}
                                    for c in peer_names}
        load_samples = interleaved_samples({c: (lambda c=c: load(c, paths[c])) for c in candidates},
                                           mode["rounds"], warmup=1)
        loads = summary(load_samples, "engine", "fp32")
        models = {c: load(c, paths[c]) for c in candidates}
        mem = _memory(paths, setting, candidates) if measure_memory else {}
    vocab = models["fp32"].config.vocab_size
    result.update({"load_s": {c: round(s, 4) for c, s in loads["medians"].items()},
                   "engine_load_ratio_vs_fp32": loads["ratio"],
                   "engine_packed_load_ratio_vs_fp32": summary(load_samples, "engine_packed", "fp32")["ratio"]})
    for batch, rounds, calls, key in ((mode["batch"], mode["rounds"], mode["calls"], "throughput"),
                                      (1, mode["latency_rounds"], mode["latency_calls"], "latency")):
        inputs = _inputs(setting, vocab, batch)
        if key == "throughput":
            result["numerics"] = _numerics(models["engine"], models["fake_quant"], inputs, models["engine_packed"])
            if int_mm:
                with torch.inference_mode():
                    result["numerics"]["engine_int_mm_logits_equal_engine"] = torch.equal(
                        models[INT_MM](**inputs).logits, models["engine"](**inputs).logits)
            if peer_names:
                result["numerics"]["peers_max_abs_logit_diff_vs_fp32"] = _peer_diffs(models, peer_names, inputs)
        samples = block_samples({c: _forward(m, inputs) for c, m in models.items()}, rounds, calls)
        speed = summary(samples, "fp32", "engine")
        figures = {f"{c}_sentences_per_s": round(batch / s, 2) for c, s in speed["medians"].items()}
        figures.update({f"{c}_ms": round(1000 * s, 1) for c, s in speed["medians"].items()} if key == "latency" else {})
        figures["engine_speedup_vs_fp32"] = speed["ratio"]
        figures["engine_speedup_round_quartiles"] = speed["round_ratio_quartiles"]
        packed = summary(samples, "fp32", "engine_packed")
        figures["engine_packed_speedup_vs_fp32"] = packed["ratio"]
        figures["engine_packed_speedup_round_quartiles"] = packed["round_ratio_quartiles"]
        figures["fake_quant_speedup_vs_fp32"] = summary(samples, "fp32", "fake_quant")["ratio"]
        if int_mm:  # > 1: the AMX kernel's products serve faster than torch._int_mm's
            figures["engine_speedup_vs_engine_int_mm"] = summary(samples, INT_MM, "engine")["ratio"]
        for c in peer_names:
            figures[f"{c}_speedup_vs_fp32"] = summary(samples, "fp32", c)["ratio"]
        ort_int8 = [c for c in peer_names if c in peers.ORT_INT8]
        if ort_int8:
            best = min(ort_int8, key=lambda c: speed["medians"][c])
            figures["best_ort_int8"] = best
            for engine in ENGINES:  # > 1: the engine is faster than the fastest ONNX Runtime int8 variant
                vs = summary(samples, best, engine)
                figures[f"{engine}_speedup_vs_best_ort_int8"] = vs["ratio"]
                figures[f"{engine}_speedup_vs_best_ort_int8_round_quartiles"] = vs["round_ratio_quartiles"]
        result[f"{key}_{batch}x{mode['seq']}"] = figures
    if mem:
        result["memory"] = mem
        for c in candidates[1:]:
            result[f"{c}_memory_ratio_vs_fp32"] = round(mem[c]["model_mib"] / mem["fp32"]["model_mib"], 3)
        best = result[f"throughput_{mode['batch']}x{mode['seq']}"].get("best_ort_int8")
        if best:
            for engine in ENGINES:
                result[f"{engine}_resident_ratio_vs_best_ort_int8"] = round(
                    mem[engine]["resident_mib"] / mem[best]["resident_mib"], 3)
    result["kernels"] = engine_status()
    return result


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _peer_diffs(models: dict, names: tuple[str, ...], inputs: dict) -> dict[str, float]:
    """Each peer's max |logit - FP32 logit| on the throughput batch: the int8 peers' own quantization error."""
    with torch.inference_mode():
        want = models["fp32"](**inputs).logits
        return {c: round(float((models[c](**inputs).logits - want).abs().max()), 6) for c in names}


def _memory(paths: dict[str, Path], setting: Setting, candidates: tuple[str, ...], steps: int = 1) -> dict:
    """Each candidate in its own fresh process, one after the other (``main`` below is the child); plus
    ``engine_eager``, the engine's child without compiled kernels (its cold start without a C++ compiler)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = {}
    for candidate in (*candidates, "engine_eager"):
        kind = "engine" if candidate == "engine_eager" else candidate
        config = setting.config()
        args = [sys.executable, "-m", "bench.serve", kind, str(paths[kind]), str(setting.batch),
                str(setting.seq), str(steps), str(config.vocab_size), config.model_type]
        child_env = dict(env, XTC_ENGINE_COMPILE="0") if candidate == "engine_eager" else env
        proc = subprocess.run(args, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"serve memory child {candidate} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        results[candidate] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def run(quick: bool = False, mode: dict | None = None, measure_memory: bool = True) -> dict:
    mode = mode or (QUICK if quick else FULL)
    if mode.get("peers") and (why := peers.missing_extra()):
        raise SystemExit(why)
    left_out = {}
    if mode.get("peers") == "available":
        mode = {**mode, "peers": peers.available()}
        left_out = {name: "torchao is not installed: pip install -c constraints.txt -e '.[serve-torchao]'"
                    for name in peers.PEERS if name not in mode["peers"]}
    deepest = max(mode["depths"])
    depths = {f"{d}L": _depth(d, mode, measure_memory, with_peers=d == deepest) for d in mode["depths"]}
    head = depths[f"{deepest}L"]
    throughput, latency = head[f"throughput_{mode['batch']}x{mode['seq']}"], head[f"latency_1x{mode['seq']}"]
    result = {
        "what": "sentences/s, latency, model memory, load time and cold start of the FP32 model, the W1A8 fake-quant "
                "student and the integer engine (load_packed(engine='int8'); engine_packed: engine='int8-packed', "
                "weights kept packed in memory), and at the deepest depth the ONNX Runtime and PyTorch int8 peers "
                "built from the same FP32 model (bench/peers.py), BERT-base width, random weights",
        "method": "throughput and latency: rounds of blocks (per round each candidate runs `calls` times in a row, "
                  "order rotating, the first call discarded, the median of the rest), ratio of medians, "
                  "inference_mode; memory: fresh process per "
                  "candidate, peak RSS minus RSS after imports, resident = RSS after load and one 1 x seq forward "
                  "minus RSS after imports; loads interleaved, warm page cache",
        "mode": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()}, "threads":
            torch.get_num_threads(), "depths": depths,
        "engine_speedup_vs_fp32": throughput["engine_speedup_vs_fp32"],
        "engine_packed_speedup_vs_fp32": throughput["engine_packed_speedup_vs_fp32"],
        "engine_load_ratio_vs_fp32": head["engine_load_ratio_vs_fp32"],
        "numerics_within_bound": all(d["numerics"]["within_bound"] for d in depths.values()),
        "peers_left_out": left_out,
    }
    if measure_memory:
        result["engine_memory_ratio_vs_fp32"] = head["engine_memory_ratio_vs_fp32"]
        result["engine_packed_memory_ratio_vs_fp32"] = head["engine_packed_memory_ratio_vs_fp32"]
    if "best_ort_int8" in throughput:
        result["best_ort_int8"] = throughput["best_ort_int8"]
        for engine in ENGINES:
            result[f"{engine}_speedup_vs_best_ort_int8"] = throughput[f"{engine}_speedup_vs_best_ort_int8"]
            result[f"{engine}_latency_ratio_vs_best_ort_int8"] = round(
                1 / latency[f"{engine}_speedup_vs_best_ort_int8"], 3)  # engine ms / fastest ORT int8 ms at batch 1
            if measure_memory:
                result[f"{engine}_resident_ratio_vs_best_ort_int8"] = head[f"{engine}_resident_ratio_vs_best_ort_int8"]
    return result


# ---------------------------------------------------------------------------------------------- the child
def child(candidate: str, path: str, batch: int, seq: int, steps: int, vocab: int, model_type: str) -> dict:
    import transformers  # noqa: F401  (imports are part of the baseline, not of the model)
    # the model's own modules (transformers imports them lazily, ~55 MiB for BERT) belong to the baseline too
    importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")

    import xtc.checkpoint  # noqa: F401
    import xtc.packed.engine  # noqa: F401
    import xtc.packed.export  # noqa: F401
    from xtc.quant.int8 import enable_compiled

    if candidate in peers.ORT_PEERS:
        import onnxruntime  # noqa: F401
    elif candidate == "torchao_int8":
        import torchao.quantization  # noqa: F401
    compile_s = None
    if candidate in ENGINE_OF or candidate == INT_MM:
        started = time.perf_counter()
        enable_compiled()  # compile once per process: the process's cost, not the model's
        compile_s = round(time.perf_counter() - started, 3)
    memory._release_free_memory()
    baseline = memory._status_kib("VmRSS")
    reset = memory._reset_peak()
    started = time.perf_counter()
    model = load(candidate, path)
    load_s = time.perf_counter() - started

    def inputs(rows: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (rows, seq), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    started = time.perf_counter()
    with torch.inference_mode():
        model(**inputs(1))  # the first request: unpacking, prepacking, compiling happen here
    first_forward_s = time.perf_counter() - started
    memory._release_free_memory()
    resident = memory._status_kib("VmRSS")
    for _ in range(steps):
        with torch.inference_mode():
            model(**inputs(batch))
    peak = memory._status_kib("VmHWM") if reset else None
    if peak is None or baseline is None:
        raise RuntimeError("no /proc/self/clear_refs or /proc/self/status here: the serve memory figure needs Linux")
    return {"after_imports_mib": round(baseline / 1024, 1), "peak_mib": round(peak / 1024, 1),
            "model_mib": round((peak - baseline) / 1024, 1), "resident_mib": round((resident - baseline) / 1024, 1),
            "load_s_in_child": round(load_s, 3), "first_forward_s": round(first_forward_s, 3),
            "compile_s": compile_s, "cold_start_s": round((compile_s or 0) + load_s + first_forward_s, 3)}


if __name__ == "__main__":
    candidate, path, batch, seq, steps, vocab, model_type = sys.argv[1:8]
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(json.dumps(child(candidate, path, int(batch), int(seq), int(steps), int(vocab), model_type)))
