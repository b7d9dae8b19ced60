"""Model directories and resumable training state, always written atomically.

A model directory is a normal Hugging Face directory (``model.safetensors`` + ``config.json`` + tokenizer
files). A quantized model stores its ``QuantConfig`` in the HF config (``xtc_quant``) and its teacher layers
(``xtc_teacher_layer``), so ``load_model_dir`` rebuilds the same fake-quant model, static activation ranges
included. Training state (optimizer, scheduler, RNG) is a ``torch.save`` file read back with
``weights_only=True``: no arbitrary unpickling.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from xtc.atomic import atomic_dir, atomic_path
from xtc.config import QuantConfig
from xtc.quant import quantize_, quantized_modules

WEIGHTS = "model.safetensors"
STATE = "train_state.pt"


def quant_config_of(model: nn.Module) -> QuantConfig | None:
    raw = getattr(model.config, "xtc_quant", None)
    return None if raw is None else QuantConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def mark_quantized(model: nn.Module, cfg: QuantConfig) -> None:
    """Record the quantization in the HF config so the directory reloads as the same fake-quant model."""
    model.config.xtc_quant = dataclasses.asdict(cfg)


def save_model_dir(model: nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """``save_pretrained`` (safetensors) + tokenizer into ``out_dir``, atomically."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model directory written by ``save_model_dir`` (or any HF classifier directory)."""
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a model directory (no config.json); pass the output dir of xtc finetune/distill")
    model = AutoModelForSequenceClassification.from_pretrained(path)
    cfg = quant_config_of(model)
    if cfg is not None:
        quantize_(model, cfg)
        if any(m.act_quantizer is not None and m.act_quantizer.range == "static"
               for _, m in quantized_modules(model) if hasattr(m, "act_quantizer")):
            model.load_state_dict(load_file(path / WEIGHTS), strict=True)  # static ranges are buffers
    return model.to(device).eval()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def save_train_state(state: Mapping[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """The state a killed run saved; a damaged file (cut short, emptied, overwritten) is a one-line error."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        why = (str(err).splitlines() or ["no data"])[0][:120]
        raise ValueError(
            f"the resume state {path} is damaged ({type(err).__name__}: {why}); delete {path.parent} to restart this "
            "run from its first step, or pass --overwrite to discard the whole run directory"
        ) from None
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "rng", "state"} <= set(state):
        raise ValueError(f"the resume state {path} is not an xtc training state; delete {path.parent} to restart "
                         "this run from its first step")
    return state
