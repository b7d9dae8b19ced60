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

**One reader.** ``read_packed`` checks the framing (every JSON type), the header (``check_header``: each field in its
vocabulary -- dtype, ``attn_implementation``, kind, shape, granularity, the encoding and stored bits of the bits),
every tensor against the header (uint8 codes, integer zero positions inside the weight, no ternary field 3, scales
in the model's dtype), and, on the meta device, the model the header's config describes against the file
(``check_model``: depth, module kinds and shapes) -- before any tensor is used or any model allocated. Both loaders
(``xtc.packed.fakequant`` and ``xtc.packed.engine``) go through it and then ``build_skeleton`` / ``check_modules`` /
``check_state``, so no engine is laxer than another: each refuses a corrupt file with the same one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification, PretrainedConfig
from transformers.initialization import no_init_weights

from xtc import __version__
from xtc.checkpoint import quant_config_of
from xtc.config import PerToken, QuantConfig, Recipe, parse_granularity
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


def _whole(value: object, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _framing_end(path: Path, framing: object) -> int:
    """The end of the data the safetensors framing describes; every entry's types checked (JSON can say anything)."""
    if not isinstance(framing, dict):
        raise corrupt(path, "the safetensors header is not a JSON object")
    end = 0
    for key, value in framing.items():
        if key == "__metadata__":
            continue
        offsets = value.get("data_offsets") if isinstance(value, dict) else None
        shape = value.get("shape") if isinstance(value, dict) else None
        if not (isinstance(value.get("dtype") if isinstance(value, dict) else None, str)
                and isinstance(shape, list) and all(_whole(n) for n in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(_whole(n) for n in offsets)
                and offsets[0] <= offsets[1]):
            raise corrupt(path, f"tensor {key!r} has a malformed safetensors entry {json.dumps(value)[:200]} "
                                "(dtype: a name; shape, data_offsets: whole numbers)")
        end = max(end, offsets[1])
    return end


def read_header(path: Path) -> dict[str, Any]:
    """The xtc header, with the safetensors framing parsed and checked here (a cut file gets a precise message) and
    every header field checked (``check_header``); reads no tensor."""
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
    except ValueError as err:
        raise corrupt(path, f"the safetensors header is not valid JSON ({err})") from None
    end = _framing_end(path, framing)
    if size != 8 + length + end:
        raise corrupt(path, f"the header describes {8 + length + end} bytes but the file has {size}")
    metadata = framing.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise corrupt(path, "the safetensors metadata is not a JSON object")
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is a safetensors file but not an xtc packed checkpoint (no {METADATA_KEY!r} entry in "
                         "its metadata); write packed checkpoints with xtc.packed.export.export_packed")
    if not isinstance(metadata[METADATA_KEY], str):
        raise corrupt(path, "the xtc header is not text (a JSON string)")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except ValueError as err:
        raise corrupt(path, f"the xtc header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise corrupt(path, "the xtc header is not a JSON object")
    found = header.get("format_version")
    if header.get("format") != FORMAT_NAME or found != FORMAT_VERSION:
        raise ValueError(
            f"packed checkpoint {path} has format_version {found!r}, but this xtc reads format_version "
            f"{FORMAT_VERSION}; export it again from the fake-quant model with this xtc, or load it with the xtc "
            "release that wrote it"
        )
    check_header(path, header)
    return header


# What a header may name: model dtypes, and the attention implementations of transformers' own code (any other name
# could make transformers fetch kernels from the hub).
DTYPES = ("float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


def check_header(path: Path, header: dict[str, Any]) -> None:
    """Every field the loaders read, of the right JSON type and within its vocabulary; module by module."""
    for key in ("model_config", "modules", "tensors"):
        if not isinstance(header.get(key), dict):
            raise corrupt(path, f"the xtc header's {key!r} is not a JSON object")
    for key in ("quant_config", "recipe"):
        if not (header.get(key) is None or isinstance(header[key], dict)):
            raise corrupt(path, f"the xtc header's {key!r} is neither null nor a JSON object")
    if header.get("dtype") not in DTYPES:
        raise corrupt(path, f"the xtc header names dtype {header.get('dtype')!r}, not one of {list(DTYPES)}")
    attn = header.get("attn_implementation")
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise corrupt(path, f"its attn_implementation {attn!r} is not one of {list(ATTN_IMPLEMENTATIONS)} (or null)")
    for key, spec in header["tensors"].items():
        if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
                and all(_whole(n) for n in spec["shape"])):
            raise corrupt(path, f"the xtc header's entry of tensor {key!r} is not {{shape: whole numbers, dtype}}")
    for name, entry in header["modules"].items():
        _check_module(path, name, entry)
    if header["quant_config"] is not None:
        header_quant_config(path, header)


def _encodings(bits: int, symmetric: bool) -> dict[str, int]:
    """The encodings (and their stored bits) export_packed writes for ``bits``-bit weights."""
    if bits == 1:
        return {"sign": 1, "sign+zeros": 1, "ternary": 2}
    return {"ternary": 2} if bits == 2 else {("offset" if symmetric else "unsigned"): bits}


def _check_module(path: Path, name: str, entry: object) -> None:
    def bad(what: str) -> ValueError:
        return corrupt(path, f"module {name!r} {what}")

    if not isinstance(entry, dict):
        raise bad("is not a JSON object")
    kind, shape, bits, symmetric = entry.get("kind"), entry.get("shape"), entry.get("bits"), entry.get("symmetric")
    if kind not in ("linear", "embedding"):
        raise bad(f"has kind {kind!r}; expected 'linear' or 'embedding'")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_whole(n, 1) for n in shape)):
        raise bad(f"has shape {shape!r}; expected two positive whole numbers")
    if not (_whole(bits, 1) and bits <= 8) or not isinstance(symmetric, bool):
        raise bad(f"has bits {bits!r} and symmetric {symmetric!r}; expected 1..8 and true/false")
    granularity = entry.get("granularity")
    try:
        if not isinstance(granularity, str) or isinstance(parse_granularity(granularity), PerToken):
            raise ValueError("a weight granularity")
        scales = num_scales(shape, granularity)
    except (ValueError, TypeError):
        raise bad(f"has granularity {granularity!r}; expected tensor, row, group:N or groups:N that divides its "
                  "shape") from None
    encodings, encoding, stored = _encodings(bits, symmetric), entry.get("encoding"), entry.get("stored_bits")
    if encodings.get(encoding) != stored or isinstance(stored, bool):
        raise bad(f"stores {bits}-bit weights as {encoding!r} at {stored!r} bits; expected one of {encodings}")
    zeros = entry.get("zeros")
    if not _whole(zeros) or (zeros and encoding != "sign+zeros"):
        raise bad(f"has zeros {zeros!r}; expected a count of zero positions (encoding 'sign+zeros' only)")
    if entry.get("scales") != scales:
        raise bad(f"has scales {entry.get('scales')!r}, but its shape and granularity need {scales}")
    if kind == "embedding":
        if "padding_idx" not in entry or not (entry["padding_idx"] is None or _whole(entry["padding_idx"])
                                              and entry["padding_idx"] < shape[0]):
            raise bad(f"has padding_idx {entry.get('padding_idx')!r}; expected null or a row index")
        return
    if not isinstance(entry.get("bias"), bool) or "act" not in entry:
        raise bad("needs 'bias' (true/false) and 'act' (null or its activation quantizer)")
    act = entry["act"]
    if act is not None:
        try:
            ActQuantizer(act["bits"], act["range"], act["granularity"], act["momentum"])
        except (TypeError, ValueError, KeyError) as err:
            raise bad(f"has an invalid act {act!r} ({type(err).__name__})") from None


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
        _check_codes(path, name, entry, tensors, header["dtype"])
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


def _check_codes(path: Path, name: str, entry: dict[str, Any], tensors: dict[str, torch.Tensor], dtype: str) -> None:
    """A module's stored tensors hold what export_packed writes: uint8 codes (no ternary field 3), integer zero
    positions inside the weight, scales in the model's dtype. Without this a faster path could read them otherwise."""
    def bad(what: str) -> ValueError:
        return corrupt(path, f"module {name!r} {what}")

    parts = {part: tensors.get(f"{name}.weight.{part}") for part in ("codes", "scale", "zero_point", "zeros")}
    if parts["codes"] is not None and parts["codes"].dtype != torch.uint8:
        raise bad(f"stores codes as {str(parts['codes'].dtype).removeprefix('torch.')}; packed codes are uint8")
    for part in ("scale", "zero_point"):
        if parts[part] is not None and str(parts[part].dtype).removeprefix("torch.") != dtype:
            raise bad(f"stores {part} as {str(parts[part].dtype).removeprefix('torch.')}; the model is {dtype}")
    zeros, numel = parts["zeros"], math.prod(entry["shape"])
    if zeros is not None:
        if zeros.dtype not in (torch.int32, torch.int64):
            raise bad(f"stores zeros as {str(zeros.dtype).removeprefix('torch.')}; zero positions are int32 or int64")
        if zeros.numel() and not (0 <= int(zeros.min()) and int(zeros.max()) < numel):
            raise bad(f"has zero positions outside its {numel} elements")
    if entry["encoding"] == "ternary" and parts["codes"] is not None:
        codes = parts["codes"]
        if bool(((codes & (codes >> 1)) & 0x55).any()):  # a 2-bit field 0b11: no ternary code
            raise bad("holds the 2-bit field 3, which is no ternary code")


def check_model(path: Path, header: dict[str, Any]) -> None:
    """The model the header's config describes, built on the meta device (no memory), against the file: its depth,
    every packed module's kind and shape (``check_modules``), every other tensor's shape. A small file asking for a
    huge model stops here, before any loader allocates it."""
    config = _config(path, header)
    names = [*header["tensors"], *header["modules"]]
    held = {int(i) for n in names for i in re.findall(r"\.layer\.(\d+)\.", f"{n}.")}
    layers = getattr(config, "num_hidden_layers", None)
    if held and layers != len(held):
        raise corrupt(path, f"its config asks for {layers!r} layers but the file holds {len(held)}")
    kwargs = {"attn_implementation": header["attn_implementation"]} if header["attn_implementation"] else {}
    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config, **kwargs)
    except Exception as err:  # a config transformers cannot build a model of
        raise corrupt(path, f"transformers cannot build the model of its model_config ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None
    check_modules(path, header, model)
    quantized = {f"{name}.weight" for name in header["modules"]}
    for key, value in model.state_dict().items():
        if key in quantized:
            continue
        spec = header["tensors"].get(key)
        if spec is None:
            raise ValueError(f"packed checkpoint {path}: tensor {key!r} is missing from the file (model built from the "
                             "stored config)")
        if spec["shape"] != list(value.shape):
            raise ValueError(f"packed checkpoint {path}: tensor {key!r} is {spec['shape']} in the file but the model "
                             f"its config describes needs {list(value.shape)}")


def read_packed(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(header, tensors)`` of a packed checkpoint, validated; safetensors and JSON only, never pickle."""
    path = Path(path)
    header = read_header(path)
    try:
        # read into memory, not mapped: load_file's tensors are views of a private file mapping, whose pages stay
        # resident beside the engine's own copies for as long as any tensor of the file lives
        tensors = safetensors.torch.load(path.read_bytes())
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise corrupt(path, str(err)) from err
    try:
        _check_tensors(path, header, tensors)
    except (KeyError, TypeError) as err:
        raise corrupt(path, f"the xtc header is missing or mistypes {err}") from err
    check_model(path, header)
    return header, tensors


# ---------------------------------------------------------------------------------------------- the model
def header_dtype(path: Path, header: dict[str, Any]) -> torch.dtype:
    dtype = getattr(torch, str(header["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise corrupt(path, f"the xtc header names dtype {header['dtype']!r}, which is not a torch dtype")
    return dtype


def _config(path: Path, header: dict[str, Any]) -> PretrainedConfig:
    config_dict = dict(header["model_config"])
    model_type = config_dict.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ValueError(f"packed checkpoint {path} holds model_type {model_type!r}, unknown to transformers "
                         f"{__import__('transformers').__version__}; upgrade transformers")
    try:
        return CONFIG_MAPPING[model_type].from_dict(config_dict)
    except Exception as err:  # transformers validates configs with its own exception types
        raise corrupt(path, f"its model_config is not a valid {model_type} config ({type(err).__name__})") from None


def build_skeleton(path: Path, header: dict[str, Any]) -> nn.Module:
    """The model the header's config describes, uninitialised (every tensor is overwritten from the file); call it
    on a header ``read_packed`` returned (``check_model`` has checked it on the meta device)."""
    config = _config(path, header)
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
