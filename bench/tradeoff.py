"""Accuracy beside speed on real models: what a user chooses from (``python -m bench --only tradeoff``).

The demo's trained SST-2 models (``make demo`` first: ``results/demo/runs.tsv`` names them) on SST-2's whole dev
set (872 sentences, the demo's maximum length 64, each batch of 32 padded to its longest sentence, sorted by
length as ``xtc evaluate`` does):

* the FP32 teacher (fine-tuned MiniLM-L6, ``load_model_dir``), and the ONNX Runtime models built from it in the
  same run (``bench/peers.py``): FP32 and the three dynamic int8 variants;
* every packed W1A8 / W2A8 student of the demo on the integer engine (``xtc.packed.load(path, engine="int8")``).

For each: dev accuracy (``xtc.train.evaluate``, the metric the workflow reports), dev-set throughput (sentences/s
over the whole dev pass, the candidates interleaved round by round, median), the file's bytes, and the model's
resident memory (a fresh process per candidate, ``python -m bench.serve``: RSS after load and one forward minus
RSS after the imports; batch 32 x 64). The machine (CPU model, ISA, threads) is in the JSON's ``machine`` block.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import peers
from bench.timing import interleaved_samples

REPO = Path(__file__).resolve().parent.parent
RUNS = "results/demo/runs.tsv"
TASK, MAX_LENGTH, BATCH = "sst2", 64, 32
ORT_CANDIDATES = ("ort_fp32", *peers.ORT_INT8)


class _Session(torch.nn.Module):
    """An ONNX Runtime session as ``xtc.train.evaluate`` calls a model (``parameters``, ``eval``, ``logits``)."""

    def __init__(self, session: peers.OrtModel) -> None:
        super().__init__()
        self.session, self._device = session, torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **inputs):
        return self.session(**inputs)


def demo_models(root: Path = REPO) -> dict[str, dict]:
    """``label -> {"path", "kind"}``: the demo's teacher (its model dir) and packed students, from its runs table."""
    table = root / RUNS
    if not table.is_file():
        raise SystemExit(f"the tradeoff benchmark reads the demo's trained models, and {table} does not exist: run "
                         "`make demo` first (GLUE_DIR=/path/to/glue_data for local data)")
    models = {}
    with table.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["run_dir"].startswith("results/teachers/"):
                models[f"FP32 teacher {row['layers']}L"] = {"path": root / row["run_dir"] / "model", "kind": "fp32"}
            elif row["packed_dir"]:
                label = f"W{row['wbits']}A{row['abits']} {row['layers']}L (xtc int8 engine)"
                models[label] = {"path": root / row["packed_dir"] / "model.xtc.safetensors", "kind": "engine"}
    missing = [str(m["path"]) for m in models.values() if not m["path"].exists()]
    if missing:
        raise SystemExit(f"the demo's models are not all there ({missing[0]} is missing): run `make demo` first")
    return models


def _eval_sets(teacher_dir: Path):
    from xtc.checkpoint import load_tokenizer
    from xtc.collate import make_collator
    from xtc.commands import load_eval_features
    from xtc.config import DataConfig, Recipe

    tokenizer = load_tokenizer(teacher_dir)
    recipe = Recipe(data=DataConfig(task=TASK, data_dir=os.environ.get("GLUE_DIR"), max_seq_length=MAX_LENGTH,
                                    padding="dynamic"))
    return load_eval_features(recipe, tokenizer), make_collator(tokenizer, "dynamic", MAX_LENGTH)


def _load(kind: str, path: Path):
    from xtc.checkpoint import load_model_dir
    from xtc.packed import load as load_packed

    if kind == "engine":
        return load_packed(path, engine="int8")
    if kind in peers.ORT_PEERS:
        return _Session(peers.OrtModel(path, torch.get_num_threads()))
    return load_model_dir(path).eval()


def _resident(kind: str, path: Path, vocab: int, model_type: str) -> dict:
    """The model's resident memory and cold start in a fresh process (bench/serve.py's child)."""
    candidate = {"fp32": "fp32", "engine": "engine"}.get(kind, kind)
    args = [sys.executable, "-m", "bench.serve", candidate, str(path), str(BATCH), str(MAX_LENGTH), "1", str(vocab),
            model_type]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {candidate} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def run(quick: bool = False, root: Path = REPO) -> dict:
    if why := peers.missing_extra():
        raise SystemExit(why)
    from xtc.train import evaluate

    models = demo_models(root)
    teacher = next(m["path"] for m in models.values() if m["kind"] == "fp32")
    eval_sets, collate = _eval_sets(teacher)
    n = sum(len(features) for features in eval_sets.values())
    with tempfile.TemporaryDirectory(prefix="xtc-tradeoff-") as tmp:
        started = time.perf_counter()
        ort_files = peers.write_ort_files(teacher, Path(tmp))
        files_s = round(time.perf_counter() - started, 1)
        for name in ORT_CANDIDATES:
            models[f"ONNX Runtime {name.removeprefix('ort_').replace('_', ' ')} (teacher)"] = {
                "path": ort_files[name], "kind": name}
        loaded = {label: _load(m["kind"], m["path"]) for label, m in models.items()}
        config = json.loads((teacher / "config.json").read_text())
        rows = {}
        for label, model in loaded.items():
            metrics = evaluate(model, TASK, eval_sets, collate, batch_size=BATCH, device=torch.device("cpu"))
            rows[label] = {"accuracy": round(100 * metrics["accuracy"], 2), "bytes": _size(models[label]["path"]),
                           "kind": models[label]["kind"]}

        def dev_pass(model):
            return lambda: evaluate(model, TASK, eval_sets, collate, batch_size=BATCH, device=torch.device("cpu"))

        with torch.inference_mode():
            samples = interleaved_samples({label: dev_pass(m) for label, m in loaded.items()},
                                          1 if quick else 3, warmup=0 if quick else 1)
        for label, seconds in samples.items():
            rows[label]["sentences_per_s"] = round(n / sorted(seconds)[len(seconds) // 2], 1)
        if not quick:
            for label, m in models.items():
                child = _resident(m["kind"], m["path"], config["vocab_size"], config["model_type"])
                rows[label]["resident_mib"] = child["resident_mib"]
                rows[label]["first_forward_s"] = child["first_forward_s"]
    base = rows[next(label for label, m in models.items() if m["kind"] == "fp32")]
    int8 = {label: r for label, r in rows.items() if r["kind"] in peers.ORT_INT8}
    best = max(int8, key=lambda label: int8[label]["sentences_per_s"])
    for r in rows.values():
        r["speedup_vs_fp32"] = round(r["sentences_per_s"] / base["sentences_per_s"], 3)
        r["speedup_vs_best_ort_int8"] = round(r["sentences_per_s"] / rows[best]["sentences_per_s"], 3)
        r["size_vs_fp32"] = round(r["bytes"] / base["bytes"], 4)
    return {"what": f"SST-2 dev accuracy, dev-set sentences/s and memory of the demo's real models ({n} sentences, "
                    f"max length {MAX_LENGTH}, batches of {BATCH} padded to their longest sentence)",
            "threads": torch.get_num_threads(), "ort_files_s": files_s, "best_ort_int8": best, "models": rows}
