"""Export: a fake-quant model (from ``quantize_``) written as a packed checkpoint (``xtc.packed.format``).

**Exactness.** Re-quantizing a dequantized weight is *not* bit-exact (BWN's ``alpha' = mean|alpha * sign|`` and the
k-bit ``max|q|`` are recomputed with float rounding, and the k-bit range shrinks), so the packed file stores the codes
and scales the fake-quant forward computed, and ``xtc.packed.load`` rebuilds the model from them without going
through the quantizers again: the logits equal the fake-quant model's with ``torch.equal``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from xtc.atomic import atomic_path
from xtc.config import Recipe
from xtc.packed.format import METADATA_KEY, make_header, module_entry
from xtc.quant.packing import default_encoding, pack_codes, packed_numel
from xtc.quant.apply import quantized_modules
from xtc.quant.packed import PackedEmbedding, PackedLinear, num_scales, weight_spec


def _remainder(model: nn.Module, quantized: list[str]) -> dict[str, torch.Tensor]:
    """Every state-dict tensor except the quantized weights: the FP remainder, stored as is."""
    skip = {f"{name}.weight" for name in quantized}
    return {k: v for k, v in model.state_dict().items() if k not in skip}


def _check_exportable(model: nn.Module, quantized: list[str], allow_float: bool) -> None:
    packed = [n for n, m in model.named_modules() if isinstance(m, (PackedLinear, PackedEmbedding))]
    if packed:
        raise ValueError(f"module {packed[0]!r} was loaded by xtc.packed.load (no latent weight); export the fake-quant "
                         "model, or load the checkpoint with xtc.packed.load(path, trainable=True) first")
    if not quantized and not allow_float:
        raise ValueError(f"{type(model).__name__} has no quantized module, so there is nothing to pack; quantize it "
                         "with xtc.quant.quantize_ first, or pass allow_float=True to store it all in full precision")


# ---------------------------------------------------------------------------------------------- export
def export_packed(model: nn.Module, path: str | os.PathLike, recipe: Recipe | dict | None = None, *,
                  allow_float: bool = False) -> dict[str, Any]:
    """Write ``model`` (fake-quant, from ``quantize_``) as a packed checkpoint; returns ``{path, file_bytes, header}``.

    An FP model (no quantized module) is an error unless ``allow_float=True``, which writes a valid all-FP file: a
    "packed" file that packs nothing is almost always a forgotten ``quantize_``. Written atomically.
    """
    quantized = list(quantized_modules(model))
    _check_exportable(model, [n for n, _ in quantized], allow_float)
    tensors: dict[str, torch.Tensor] = {}
    modules: dict[str, dict[str, Any]] = {}
    for name, module in quantized:
        codes, scale, *zero_point = module.weight_quantizer.quantize(module.weight)
        if not torch.isfinite(scale).all():
            raise ValueError(f"module {name!r} has non-finite weights (its scales are NaN or inf): the training "
                             "diverged; export a checkpoint from before it (e.g. the run's model/, the best on dev)")
        packed = pack_codes(codes, module.weight_quantizer.bits, module.weight_quantizer.symmetric)
        tensors[f"{name}.weight.codes"] = packed.data
        tensors[f"{name}.weight.scale"] = scale
        if zero_point:
            tensors[f"{name}.weight.zero_point"] = zero_point[0]
        if packed.zeros is not None:
            tensors[f"{name}.weight.zeros"] = packed.zeros
        zeros = 0 if packed.zeros is None else packed.zeros.numel()
        modules[name] = module_entry(name, module, packed.encoding, packed.stored_bits, zeros)
    # The remainder is cloned: safetensors refuses tensors that share storage (tied or viewed parameters).
    tensors.update({k: v.detach().clone() for k, v in _remainder(model, list(modules)).items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = make_header(model, modules, {k: (list(v.shape), v.dtype) for k, v in tensors.items()}, recipe)
    path = Path(path)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(header, sort_keys=True)})
    return {"path": str(path), "file_bytes": path.stat().st_size, "header": header}


def predict_packed_bytes(model: nn.Module, recipe: Recipe | dict | None = None) -> int:
    """The exact size ``export_packed`` would write, from shapes alone (works on a ``meta``-device model).

    Assumes no binary weight holds an exact zero (each zero adds a 4-byte position; see ``xtc.quant.packing``).
    """
    quantized = list(quantized_modules(model))
    specs: dict[str, tuple[list[int], torch.dtype]] = {}
    modules: dict[str, dict[str, Any]] = {}
    for name, module in quantized:
        bits, granularity, symmetric = weight_spec(module)
        encoding, stored_bits = default_encoding(bits, symmetric)
        specs[f"{name}.weight.codes"] = ([packed_numel(module.weight.numel(), stored_bits)], torch.uint8)
        scale_shape = [num_scales(module.weight.shape, granularity), 1]
        specs[f"{name}.weight.scale"] = (scale_shape, module.weight.dtype)
        if not symmetric and bits >= 3:
            specs[f"{name}.weight.zero_point"] = (scale_shape, module.weight.dtype)
        modules[name] = module_entry(name, module, encoding, stored_bits, 0)
    specs.update({k: (list(v.shape), v.dtype) for k, v in _remainder(model, list(modules)).items()})
    header = make_header(model, modules, specs, recipe)
    # safetensors orders tensors and pads its header itself: ask it rather than re-implement its layout.
    zeros = {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in specs.items()}
    return len(safetensors.torch.save(zeros, metadata={METADATA_KEY: json.dumps(header, sort_keys=True)}))
