"""The serving sweep a user would run before choosing: threads x batch x sequence length, the integer engine against
the FP32 model and the ONNX Runtime int8 peers built from the same FP32 model in the same run.

``python -m bench --only serve_sweep`` (opt-in: ~5 minutes at 12 layers on 2 cores). One set of files (the ones
``bench/serve.py`` writes: BERT-base shapes, random weights; full mode 12 layers, quick mode 2), then for each thread
count (1 and 2, capped at the machine's cores) every model is loaded again with that many threads (torch's
``set_num_threads``; ONNX Runtime's intra-op threads at session creation) and, for each batch (1, 8, 32) and sequence
length (32, 128), the candidates are timed in rounds of blocks (``bench.timing.block_samples``: 3 calls in a row,
the first discarded). Reported per cell: sentences/s
of each candidate, the fastest ONNX Runtime int8 variant of that cell, and each engine's throughput over it (> 1:
the engine is faster); at batch 1 that ratio is the inverse of the latency ratio. The throughput, latency and
memory record at 32 x 128 and 1 x 128, with cold start and the other peers, is ``bench/serve.py``'s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from bench import peers, serve
from bench.kd_step import Setting
from bench.timing import block_samples, summary

CANDIDATES = ("fp32", "engine", "engine_packed", "ort_int8", "ort_int8_per_channel")
ORT_INT8 = tuple(c for c in CANDIDATES if c in peers.ORT_INT8)
FULL = {"depth": 12, "threads": (1, 2), "batches": (1, 8, 32), "seqs": (32, 128), "rounds": 3}
QUICK = {"depth": 2, "threads": (1, 2), "batches": (1, 8), "seqs": (32, 128), "rounds": 2}


def _cell(models: dict, setting: Setting, vocab: int, batch: int, rounds: int) -> dict:
    inputs = serve._inputs(setting, vocab, batch)
    samples = block_samples({c: serve._forward(m, inputs) for c, m in models.items()}, rounds, 3)  # 1 + 2 timed
    medians = summary(samples, "engine", "fp32")["medians"]
    best = min(ORT_INT8, key=lambda c: medians[c])
    cell = {"sentences_per_s": {c: round(batch / s, 2) for c, s in medians.items()}, "best_ort_int8": best}
    for engine in serve.ENGINES:
        vs = summary(samples, best, engine)
        cell[f"{engine}_speedup_vs_best_ort_int8"] = vs["ratio"]
        cell[f"{engine}_speedup_vs_best_ort_int8_round_quartiles"] = vs["round_ratio_quartiles"]
    return cell


def run(quick: bool = False, mode: dict | None = None) -> dict:
    mode = mode or (QUICK if quick else FULL)
    if why := peers.missing_extra():
        raise SystemExit(why)
    cores = os.cpu_count() or 1
    threads = tuple(t for t in mode["threads"] if t <= cores) or (1,)
    model = (*mode.get("model", ()), ("num_hidden_layers", mode["depth"]))
    setting = Setting(max(mode["batches"]), max(mode["seqs"]), mode["rounds"], model)
    before = torch.get_num_threads()
    cells: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="xtc-sweep-") as tmp:
            paths = serve.write_files(setting, Path(tmp))
            paths.update({c: p for c, p in peers.write_ort_files(paths["fp32"], Path(tmp) / "peers").items()
                          if c in CANDIDATES})
            for t in threads:
                torch.set_num_threads(t)
                models = {c: serve.load(c, paths[c]) for c in CANDIDATES}  # ORT sessions take t threads here
                vocab = models["fp32"].config.vocab_size
                for seq in mode["seqs"]:
                    shaped = Setting(setting.batch, seq, mode["rounds"], model)
                    for batch in mode["batches"]:
                        cells[f"threads{t}_{batch}x{seq}"] = _cell(models, shaped, vocab, batch, mode["rounds"])
                del models
    finally:
        torch.set_num_threads(before)
    ratios = [cell[f"{e}_speedup_vs_best_ort_int8"] for cell in cells.values() for e in serve.ENGINES]
    return {
        "what": "sentences/s of the FP32 model, the integer engine (int8, int8-packed) and ONNX Runtime's dynamic int8 "
                "(per tensor, per channel) built from the same FP32 model, per threads x batch x sequence, "
                "BERT-base width, random weights",
        "method": "one set of files; per thread count every model reloaded; per cell rounds of blocks (3 calls in a "
                  "row, the first discarded), medians; "
                  "engine over the cell's fastest ONNX Runtime int8 variant (> 1: engine faster)",
        "mode": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()}, "threads": list(threads),
        "cells": cells,
        "cells_engine_at_or_above_best_ort_int8": sum(
            max(cell[f"{e}_speedup_vs_best_ort_int8"] for e in serve.ENGINES) >= 1.0 for cell in cells.values()),
        "engine_vs_best_ort_int8_min": min(ratios), "engine_vs_best_ort_int8_max": max(ratios),
    }
