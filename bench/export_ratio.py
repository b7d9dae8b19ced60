"""Packed checkpoint bytes over the theoretical minimum, for 1- and 2-bit students of 12, 6 and 5 layers (exact).

For each depth and bit-width a random BERT student (BERT-base width, the XTC recipe: ``QuantConfig(weight_bits=b)``,
8-bit activations, per-row embeddings) is written with ``xtc.packed.export.export_packed`` and measured on disk. The
theoretical minimum is ``xtc.packed.size.size_report``'s ``whole_model``: every weight of the XTC module set at exactly its
bit-width, its scales in float32, the full-precision remainder (LayerNorms, biases, position/token-type embeddings,
pooler, classifier) as stored. Nothing is timed; the ratio is exact for the given shapes.

The difference is accounted for byte by byte (``overhead``): the safetensors framing (8 bytes + its JSON header,
which carries xtc's own header: model config, recipe, per-module layout), the positions of exact-zero binary codes
(a random BERT's all-zero padding row of the word embeddings: 768 int32 positions), and whatever is left
(``rounding``: the last partial byte of each packed tensor; 0 for BERT's shapes).

Students of 6 and 5 layers keep the first layers of one random 12-layer model: the file size depends on the shapes
only, not on which teacher layers were kept, and this avoids building three random BERT-bases.
"""

from __future__ import annotations

import copy
import json
import struct
import tempfile
from pathlib import Path

from torch import nn

from xtc.config import QuantConfig
from xtc.models import bert_config, random_model
from xtc.packed.export import export_packed
from xtc.packed.size import size_report
from xtc.quant import dequantize_, quantize_
from xtc.reduce import encoder_layers

LAYERS = (12, 6, 5)
BITS = (1, 2)
QUICK_MODEL: dict = {}  # quick mode keeps BERT-base width: the ratio depends on it, and it costs seconds


def _framing(path: Path) -> tuple[int, dict]:
    """``(8 + header length, tensor table)`` of a safetensors file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return 8 + length, json.loads(f.read(length))


def measure(model: nn.Module, path: Path, teacher_config, bits: int) -> dict:
    """Quantize ``model`` in place, export it to ``path``, and account for every byte of the file."""
    quantize_(model, QuantConfig(weight_bits=bits))
    file_bytes = export_packed(model, path)["file_bytes"]
    report = size_report(model, path, teacher_config)
    theoretical = report["theoretical_bytes"]["whole_model"]
    header, table = _framing(path)
    zero_positions = sum(v["data_offsets"][1] - v["data_offsets"][0]
                         for k, v in table.items() if k.endswith(".weight.zeros"))
    rounding = file_bytes - header - zero_positions - theoretical
    assert rounding >= 0, (file_bytes, header, zero_positions, theoretical)
    return {
        "file_bytes": file_bytes, "theoretical_bytes": theoretical,
        "ratio": round(file_bytes / theoretical, 5),
        "overhead": {"safetensors_header": header, "zero_positions": zero_positions, "rounding": rounding},
        "compression_whole_model_on_disk": round(report["compression"]["whole_model_on_disk"], 2),
    }


def run(quick: bool = False, layers: tuple[int, ...] = LAYERS, bits: tuple[int, ...] = BITS,
        model: dict | None = None) -> dict:
    """``quick`` uses a 256-wide BERT (BERT's vocabulary): the same accounting on smaller tensors."""
    overrides = model if model is not None else (QUICK_MODEL if quick else {})
    teacher_config = bert_config("bert-base", num_labels=2, num_hidden_layers=max(layers), **overrides)
    base = random_model(copy.deepcopy(teacher_config), seed=0)  # its config is edited below: not the teacher's
    all_layers = list(encoder_layers(base))
    results = {}
    with tempfile.TemporaryDirectory(prefix="xtc-bench-") as tmp:
        for depth in layers:
            base.base_model.encoder.layer = nn.ModuleList(all_layers[:depth])
            base.config.num_hidden_layers = depth
            for b in bits:
                results[f"{depth}L_W{b}"] = measure(base, Path(tmp) / f"{depth}L_W{b}.safetensors", teacher_config, b)
                dequantize_(base)  # back to the same FP weights for the next bit-width
    ratios = [r["ratio"] for r in results.values()]
    return {
        "what": "packed file bytes / theoretical minimum (xtc.packed.size whole_model), real files, exact",
        "width": {"hidden": teacher_config.hidden_size, "intermediate": teacher_config.intermediate_size,
                  "vocab": teacher_config.vocab_size},
        "target": "<= 1.01", "max_ratio": max(ratios), "students": results,
    }
