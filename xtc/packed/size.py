"""Model size accounting (docs/method.md, "Model size"): FP32 teacher bytes, the theoretical minimum of a recipe, the
packed file's real bytes, and the compression ratio under both conventions (quantized part only; whole model).

``size_from_config`` works offline from a config alone (a ``meta``-device model: no weights are allocated).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PretrainedConfig

from xtc.config import QuantConfig
from xtc.packed.export import predict_packed_bytes
from xtc.packed.format import FP32_BYTES
from xtc.quant.packed import num_scales, weight_spec
from xtc.quant.apply import module_group, quantize_
from xtc.reduce import select_layers

# ---------------------------------------------------------------------------------------------- size accounting
CONVENTIONS = {
    "quantized_part": "teacher's XTC module set (encoder linears + word embeddings) at FP32 over the student's at "
                      "their bit-width plus scales (and zero points) at their precision",
    "whole_model": "teacher's parameters (classifier included) at FP32 over the student's quantized part plus its "
                   "full-precision remainder (LayerNorms, biases, position/token-type embeddings, pooler, "
                   "classifier, activation ranges) as stored",
    "bits": "binary = 1 bit, ternary = 2 bits (as the paper counts it, not log2(3)), k-bit = k bits per weight",
}


def _teacher_counts(config: PretrainedConfig) -> dict[str, Any]:
    with torch.device("meta"):
        teacher = AutoModelForSequenceClassification.from_config(copy.deepcopy(config))
    params = sum(p.numel() for p in teacher.parameters())
    part = sum(m.weight.numel() for n, m in teacher.named_modules() if module_group(n) and hasattr(m, "weight"))
    return {
        "layers": config.num_hidden_layers, "params": params,
        "params_without_head": sum(p.numel() for p in teacher.base_model.parameters()),
        "fp32_bytes": params * FP32_BYTES,
        "quantized_part_params": part, "quantized_part_fp32_bytes": part * FP32_BYTES,
    }


def size_report(model: nn.Module, path: str | os.PathLike | None = None,
                teacher_config: PretrainedConfig | None = None) -> dict[str, Any]:
    """Sizes and compression ratios of ``model`` (real or ``meta``), under both conventions of docs/method.md, "Model size".

    The theoretical minimum stores each weight of the XTC module set at exactly its bit-width (FP ones at their
    dtype), each scale/zero point at its dtype, and the remainder as is; ``path`` adds the packed file's real size.
    ``teacher_config`` is the uncompressed model compared against (default: ``model.config``, which is only right
    when the student was not layer-reduced).
    """
    if teacher_config is None:
        if getattr(model.config, "xtc_teacher_layer", None) is not None:
            raise ValueError("the model is a layer-reduced student (config.xtc_teacher_layer is set); pass "
                             "teacher_config, the config of the teacher it was reduced from")
        teacher_config = model.config
    weights, bits_by_group = {}, {}
    part_bits = scale_bytes = part_params = 0
    for name, module in model.named_modules():
        group = module_group(name)
        if group is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        w = module.weight
        spec = weight_spec(module)
        bits = spec[0] if spec else w.element_size() * 8
        weights[f"{name}.weight"] = w
        part_params += w.numel()
        part_bits += w.numel() * bits
        if spec:
            per_scale = w.element_size() * (1 if spec[2] or spec[0] <= 2 else 2)
            scale_bytes += num_scales(w.shape, spec[1]) * per_scale
        bits_by_group.setdefault(group, set()).add(spec[0] if spec else None)
    remainder = [v for k, v in model.state_dict().items() if k not in weights]
    remainder_bytes = sum(v.numel() * v.element_size() for v in remainder)
    part_bytes = part_bits / 8 + scale_bytes
    whole_bytes = part_bytes + remainder_bytes
    teacher = _teacher_counts(teacher_config)
    file_bytes = Path(path).stat().st_size if path is not None else None
    return {
        "teacher": teacher,
        "student": {
            "layers": model.config.num_hidden_layers, "params": sum(p.numel() for p in model.parameters()),
            "quantized_part_params": part_params, "remainder_params": sum(v.numel() for v in remainder),
            "bits": {g: (b.pop() if len(b) == 1 else sorted(b, key=str)) for g, b in bits_by_group.items()},
        },
        "theoretical_bytes": {"quantized_part": part_bytes, "scales": scale_bytes, "remainder": remainder_bytes,
                              "whole_model": whole_bytes},
        "packed_file_bytes": file_bytes,
        "packed_over_theoretical": None if file_bytes is None else file_bytes / whole_bytes,
        "compression": {
            "quantized_part": teacher["quantized_part_fp32_bytes"] / part_bytes,
            "whole_model": teacher["fp32_bytes"] / whole_bytes,
            "whole_model_on_disk": None if file_bytes is None else teacher["fp32_bytes"] / file_bytes,
        },
        "conventions": CONVENTIONS,
    }


def size_from_config(model_config: PretrainedConfig, layers: int | None = None, weight_bits: int | None = 1,
                     quant_cfg: QuantConfig | None = None) -> dict[str, Any]:
    """``size_report`` of the XTC student of a teacher config, offline and without weights (a ``meta`` model).

    ``layers`` keeps that many encoder layers (chosen as ``build_student`` would); ``weight_bits`` replaces
    ``quant_cfg.weight_bits`` (default ``QuantConfig``: XTC's per-tensor linears, per-row embeddings, dynamic A8);
    ``None`` sizes an FP student. Adds ``packed_file_bytes_predicted``, what ``export_packed`` would write.
    """
    depth = model_config.num_hidden_layers
    student_config = copy.deepcopy(model_config)
    if layers is not None and layers != depth:
        student_config.num_hidden_layers = layers
        student_config.xtc_teacher_layer = list(select_layers(depth, layers))
    cfg = dataclasses.replace(quant_cfg or QuantConfig(), weight_bits=weight_bits)
    with torch.device("meta"):
        student = AutoModelForSequenceClassification.from_config(student_config)
        if cfg.enabled:
            quantize_(student, cfg)
    report = size_report(student, teacher_config=model_config)
    report["packed_file_bytes_predicted"] = predict_packed_bytes(student)
    report["packed_predicted_over_theoretical"] = report["packed_file_bytes_predicted"] / report[
        "theoretical_bytes"]["whole_model"]
    return report
