"""The packed model's life after training: the file format and its one reader (``format``; bit packing itself is
``xtc.quant.packing``), export (``export``), the two loaders -- the exact float path (``fakequant``) and the integer CPU
engine (``engine``) -- behind one front door, ``load(path, engine=...)``, and what serves and measures a packed model
(``predict``, ``serving``, ``size``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from xtc.config import ENGINES, Engine

if TYPE_CHECKING:
    import torch
    from torch import nn


def load(path: str | os.PathLike, engine: Engine = "float", device: str | torch.device = "cpu",
         trainable: bool = False, compile: bool | None = None) -> nn.Module:
    """The model of a packed checkpoint, in eval mode, on the chosen engine.

    ``engine="float"``: the exact fake-quant model (logits equal the exported model's; ``trainable=True`` for
    fine-tuning; any device). ``"int8"``: the integer CPU engine (int8 weights, integer matmuls; logits within
    ``xtc.packed.engine.logit_bound``); ``"int8-packed"``: the same, with the weights kept packed in memory.
    Every engine reads the file through ``xtc.packed.format.read_packed`` and rejects the same corrupt files.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {list(ENGINES)}")
    if engine == "float":
        from xtc.packed.fakequant import load_float

        return load_float(path, device, trainable)
    import torch

    if trainable or torch.device(device).type != "cpu":
        raise ValueError(f"engine={engine!r} serves on CPU and cannot be trained: drop trainable=True and pass "
                         f"device='cpu' (got device={device!r}), or use engine='float'")
    from xtc.packed.engine import load_engine

    return load_engine(path, engine, compile)
