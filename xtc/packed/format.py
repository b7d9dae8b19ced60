"""The packed checkpoint's file format: the one writer's header and the one reader every loader goes through.

No XTC implementation ever saved a packed checkpoint: they stored the quantized values as FP32, so the 1-bit model
stayed 418 MB on disk. Here each quantized weight is stored as its codes, bit-packed by ``xtc.quant.packing``
(1-bit weights 8 per byte, ternary 4 per byte, k-bit k bits each), plus its scales (and zero points) at their real
precision, in float32 as the model computes them; every other tensor of ``model.state_dict()`` (LayerNorms, biases,
position/token-type embeddings, pooler, classifier, static activation ranges) is stored as is.

**Format** (``FORMAT_VERSION`` 1): one safetensors file, whose ``__metadata__["xtc"]`` is a JSON header with
``format``, ``format_version``, ``xtc_version``, ``model_config`` (the HF config, ``to_dict``),
``attn_implementation``, ``dtype``, ``quant_config`` (the ``QuantConfig`` that ``mark_quantized`` recorded in the
model's config, else the recipe's, checked against the modules' bits; null when neither is given; the float loader
records it on the loaded model again), ``recipe`` (or null), ``modules`` (per quantized module: ``kind``, ``group``,
``shape``, ``bits``, ``granularity``, ``symmetric``, ``encoding``, ``stored_bits``, ``zeros``, ``scales``, and
``bias``/``act`` for linears or ``padding_idx`` for embeddings) and ``tensors`` (the shape and dtype of every tensor
in the file). A module ``m`` stores ``m.weight.codes`` (packed uint8), ``m.weight.scale`` (G, 1),
``m.weight.zero_point`` (asymmetric k-bit only) and ``m.weight.zeros`` (encoding ``sign+zeros`` only). Nothing is
ever unpickled.

**One reader.** ``read_packed`` checks the framing, the header and every tensor against the header before any tensor
is used, and ``build_skeleton`` / ``check_modules`` / ``check_state`` check the model the header describes; both
loaders (``xtc.packed.fakequant`` and ``xtc.packed.engine``) go through them, so no engine is laxer than another.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification
from transformers.initialization import no_init_weights

from xtc import __version__
from xtc.checkpoint import quant_config_of
from xtc.config import QuantConfig, Recipe
from xtc.quant.packing import ENCODINGS, PackedCodes, packed_numel, unpack_codes
from xtc.quant.apply import module_group
from xtc.quant.modules import ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer
from xtc.quant.packed import PackedEmbedding, PackedLinear, num_scales, weight_spec
from xtc.quant.primitives import dequantize

FORMAT_NAME = "xtc.packed"
FORMAT_VERSION = 1
METADATA_KEY = "xtc"
FP32_BYTES = 4


# ---------------------------------------------------------------------------------------------- header
def module_entry(name: str, module: QuantLinear | QuantEmbedding, encoding: str, stored_bits: int,
                  zeros: int) -> dict[str, Any]:
    bits, granularity, symmetric = weight_spec(module)
    shape = list(module.weight.shape)
    entry: dict[str, Any] = {
        "kind": "embedding" if isinstance(module, QuantEmbedding) else "linear", "group": module_group(name),
        "shape": shape, "bits": bits, "granularity": granularity, "symmetric": symmetric, "encoding": encoding,
        "stored_bits": stored_bits, "zeros": zeros, "scales": num_scales(shape, granularity),
    }
    if isinstance(module, QuantEmbedding):
        entry["padding_idx"] = module.padding_idx
    else:
        act = module.act_quantizer
        entry["bias"] = module.bias is not None
        entry["act"] = None if act is None else {
            "bits": act.bits, "range": act.range, "granularity": str(act.granularity), "momentum": act.momentum}
    return entry


def _check_bits(cfg: QuantConfig, modules: dict[str, dict[str, Any]], what: str,
                fix: str = "pass the recipe the model was quantized with") -> None:
    """A header must never contradict the weights it holds."""
    for name, entry in modules.items():
        expected = cfg.bits_for(entry["group"])
        if expected != entry["bits"]:
            raise ValueError(
                f"{what} quantizes group {entry['group']!r} at {expected} bits, but module {name!r} holds "
                f"{entry['bits']}-bit weights; {fix}"
            )


def _quant_and_recipe(model: nn.Module, recipe: Recipe | dict | None, modules: dict[str, dict[str, Any]]):
    """The header's ``quant_config`` -- the one ``mark_quantized`` recorded, else the recipe's -- and ``recipe``."""
    recipe = Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe
    recorded = quant_config_of(model)
    if recorded is not None:
        _check_bits(recorded, modules, "the model's recorded quantization (config.xtc_quant)",
                    "record the config it was quantized with: xtc.checkpoint.mark_quantized(model, cfg)")
    if recipe is not None:
        _check_bits(recipe.quant, modules, "the recipe")
    quant = recorded or (recipe.quant if recipe is not None and recipe.quant.enabled else None)
    return (None if quant is None else dataclasses.asdict(quant)), (None if recipe is None else recipe.to_dict())


def make_header(model: nn.Module, modules: dict[str, dict[str, Any]], specs: dict[str, tuple[list[int], torch.dtype]],
            recipe: Recipe | dict | None) -> dict[str, Any]:
    first = next(model.parameters())
    quant_config, recipe = _quant_and_recipe(model, recipe, modules)
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "xtc_version": __version__,
        "model_config": json.loads(model.config.to_json_string(use_diff=False)),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "dtype": str(first.dtype).removeprefix("torch."),
        "quant_config": quant_config, "recipe": recipe, "modules": modules,
        "tensors": {k: {"shape": list(shape), "dtype": str(dtype).removeprefix("torch.")}
                    for k, (shape, dtype) in sorted(specs.items())},
    }


# ---------------------------------------------------------------------------------------------- read
def corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"truncated or corrupt packed checkpoint {path}: {why}; export it again with export_packed "
                      "(or copy the file again)")


def read_header(path: Path) -> dict[str, Any]:
    """Parse and check the safetensors framing ourselves, so a cut file gets a precise message."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise corrupt(path, f"the file has {size} bytes, fewer than the 8-byte safetensors header length")
        (length,) = struct.unpack("<Q", prefix)
        if 8 + length > size:
            raise corrupt(path, f"the header claims {length} bytes but only {size - 8} follow")
        raw = f.read(length)
    try:
        framing = json.loads(raw)
        end = max((v["data_offsets"][1] for k, v in framing.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise corrupt(path, f"the safetensors header is not valid ({err})") from err
    if size != 8 + length + end:
        raise corrupt(path, f"the header describes {8 + length + end} bytes but the file has {size}")
    metadata = framing.get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is a safetensors file but not an xtc packed checkpoint (no {METADATA_KEY!r} entry in "
                         "its metadata); write packed checkpoints with xtc.packed.export.export_packed")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except ValueError as err:
        raise corrupt(path, f"the xtc header is not valid JSON ({err})") from err
    found = header.get("format_version") if isinstance(header, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or found != FORMAT_VERSION:
        raise ValueError(
            f"packed checkpoint {path} has format_version {found!r}, but this xtc reads format_version "
            f"{FORMAT_VERSION}; export it again from the fake-quant model with this xtc, or load it with the xtc "
            "release that wrote it"
        )
    return header


def _check_tensors(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor is where the header says, with the header's shape; packed sizes agree with module shapes."""
    listed = header["tensors"]
    for key in sorted(set(listed) ^ set(tensors)):
        where = "listed in the header but missing from the file" if key in listed else "in the file but not the header"
        raise ValueError(f"packed checkpoint {path}: tensor {key!r} is {where}; the checkpoint was edited or corrupted")
    for key, spec in listed.items():
        got = [list(tensors[key].shape), str(tensors[key].dtype).removeprefix("torch.")]
        if got != [spec["shape"], spec["dtype"]]:
            raise ValueError(f"packed checkpoint {path}: tensor {key!r} is {got[1]} {got[0]} in the file but "
                             f"{spec['dtype']} {spec['shape']} in the header; the checkpoint was edited or corrupted")
    for name, entry in header["modules"].items():
        numel, bits = math.prod(entry["shape"]), entry["stored_bits"]
        if entry["encoding"] not in ENCODINGS:
            raise ValueError(f"packed checkpoint {path}: module {name!r} has unknown encoding {entry['encoding']!r}")
        scales = num_scales(entry["shape"], entry["granularity"])
        expected = {"codes": [packed_numel(numel, bits)], "scale": [scales, 1]}
        if not entry["symmetric"] and entry["bits"] >= 3:
            expected["zero_point"] = expected["scale"]
        if entry["encoding"] == "sign+zeros":
            expected["zeros"] = [entry["zeros"]]
        for part, shape in expected.items():
            got = list(tensors[f"{name}.weight.{part}"].shape) if f"{name}.weight.{part}" in tensors else None
            if got != shape:
                raise ValueError(
                    f"packed checkpoint {path}: module {name!r} of shape {entry['shape']} at {bits} stored bits "
                    f"needs {part} of shape {shape}, but the file holds {got}; the checkpoint was edited or corrupted")
        for part in ("scale", "zero_point"):
            bad = (~torch.isfinite(tensors.get(f"{name}.weight.{part}", torch.zeros(0)))).sum().item()
            if bad:
                raise ValueError(
                    f"packed checkpoint {path}: module {name!r} has {bad} NaN or infinite {part} value(s), so its "
                    "weights are not numbers; export it again from a model whose weights are finite")


def read_packed(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(header, tensors)`` of a packed checkpoint, validated; safetensors and JSON only, never pickle."""
    path = Path(path)
    header = read_header(path)
    try:
        tensors = safetensors.torch.load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise corrupt(path, str(err)) from err
    try:
        _check_tensors(path, header, tensors)
    except (KeyError, TypeError) as err:
        raise corrupt(path, f"the xtc header is missing or mistypes {err}") from err
    return header, tensors


# ---------------------------------------------------------------------------------------------- the model
def header_dtype(path: Path, header: dict[str, Any]) -> torch.dtype:
    dtype = getattr(torch, str(header["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise corrupt(path, f"the xtc header names dtype {header['dtype']!r}, which is not a torch dtype")
    return dtype


def build_skeleton(path: Path, header: dict[str, Any]) -> nn.Module:
    """The model the header's config describes, uninitialised (every tensor is overwritten from the file)."""
    config_dict = dict(header["model_config"])
    model_type = config_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"packed checkpoint {path} holds model_type {model_type!r}, unknown to transformers "
                         f"{__import__('transformers').__version__}; upgrade transformers")
    config = CONFIG_MAPPING[model_type].from_dict(config_dict)
    kwargs = {"attn_implementation": header["attn_implementation"]} if header["attn_implementation"] else {}
    # Random initialisation would be wasted: at BERT-base it is most of the load time (0.55 s of ~1 s, 2-core CPU).
    with no_init_weights():
        return AutoModelForSequenceClassification.from_config(config, **kwargs)


def check_modules(path: Path, header: dict[str, Any], model: nn.Module) -> None:
    """Every packed module replaces a module of the same kind and shape in the model the config describes."""
    originals = dict(model.named_modules())
    for name, entry in header["modules"].items():
        old = originals.get(name)
        kind = nn.Embedding if entry["kind"] == "embedding" else nn.Linear
        if not isinstance(old, kind):
            raise ValueError(f"packed checkpoint {path}: module {name!r} ({entry['kind']}) is not a {kind.__name__} of "
                             "the model its config describes; the file is inconsistent")
        if list(old.weight.shape) != entry["shape"]:
            raise ValueError(f"packed checkpoint {path}: module {name!r} is {entry['shape']} in the header but "
                             f"{list(old.weight.shape)} in the model its config describes; the file is inconsistent")


def remainder_state(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's tensors that are not a packed weight's parts: the model's FP remainder."""
    return {k: v for k, v in tensors.items() if not any(k.startswith(f"{m}.weight.") for m in header["modules"])}


def dequantized_weight(name: str, entry: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dequantize(codes, scale)``: the very weight the fake-quant forward computes, from the stored codes."""
    scale = tensors[f"{name}.weight.scale"]
    stored = PackedCodes(entry["encoding"], entry["stored_bits"], tensors[f"{name}.weight.codes"],
                         tensors.get(f"{name}.weight.zeros"))
    codes = unpack_codes(stored, math.prod(entry["shape"]), scale.dtype).reshape(entry["shape"])
    return dequantize(codes, scale, entry["granularity"], tensors.get(f"{name}.weight.zero_point"))


def check_state(path: Path, expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> None:
    """The file's remaining tensors are exactly the model's, with the model's shapes."""
    for key in sorted(set(expected) ^ set(state)):
        where = "missing from the file" if key in expected else "not part of the model"
        raise ValueError(f"packed checkpoint {path}: tensor {key!r} is {where} (model built from the stored config)")
    for key, value in state.items():
        if value.shape != expected[key]:
            raise ValueError(f"packed checkpoint {path}: tensor {key!r} is {list(value.shape)} in the file but the "
                             f"model its config describes needs {list(expected[key])}")


def float_module(entry: dict[str, Any], trainable: bool, dtype: torch.dtype) -> nn.Module:
    """The module of one header entry on the float path: ``PackedLinear``/``PackedEmbedding`` holding the
    dequantized weight, or (``trainable``) ``QuantLinear``/``QuantEmbedding`` with it as the latent weight."""
    bits, granularity, symmetric = entry["bits"], entry["granularity"], entry["symmetric"]
    if entry["kind"] == "embedding":
        if trainable:
            return QuantEmbedding(*entry["shape"], padding_idx=entry["padding_idx"], dtype=dtype,
                                  weight_quantizer=WeightQuantizer(bits, granularity, symmetric))
        return PackedEmbedding(*entry["shape"], entry["padding_idx"], bits, granularity, symmetric, dtype)
    act = entry["act"] and ActQuantizer(entry["act"]["bits"], entry["act"]["range"], entry["act"]["granularity"],
                                        entry["act"]["momentum"])
    out_features, in_features = entry["shape"]
    if trainable:
        return QuantLinear(in_features, out_features, entry["bias"], WeightQuantizer(bits, granularity, symmetric),
                           act, dtype=dtype)
    return PackedLinear(in_features, out_features, entry["bias"], act, bits, granularity, symmetric, dtype)


def header_quant_config(path: Path, header: dict[str, Any]) -> QuantConfig:
    raw = header["quant_config"]
    try:
        cfg = QuantConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (TypeError, ValueError, AttributeError) as err:
        raise corrupt(path, f"its quant_config is not a valid QuantConfig ({err})") from None
    _check_bits(cfg, header["modules"], f"packed checkpoint {path}: the header's quant_config",
                "the checkpoint was edited or corrupted; export it again")
    return cfg
