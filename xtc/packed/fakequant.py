"""The exact float path of a packed checkpoint (``xtc.packed.load(path)``, ``engine="float"``).

It rebuilds the model with ``PackedLinear`` / ``PackedEmbedding`` (``xtc.quant.packed``: the fake-quant modules with
an identity weight rule), which hold ``dequantize(codes, scale)`` -- the very tensor the fake-quant forward computes,
from the same codes and scales by the same ``dequantize`` -- and run ``QuantLinear``'s own forward, activation
quantizer included, so the logits equal the exported fake-quant model's with ``torch.equal``. ``trainable=True``
instead rebuilds ``QuantLinear`` / ``QuantEmbedding`` with the dequantized weights as latent weights, for fine-tuning
(close to, but not bit-identical with, the exported model: their forward re-quantizes).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from xtc.checkpoint import mark_quantized
from xtc.packed.format import (
    build_skeleton,
    check_modules,
    check_state,
    dequantized_weight,
    float_module,
    header_dtype,
    header_quant_config,
    read_packed,
    remainder_state,
)


def load_float(path: str | os.PathLike, device: str | torch.device = "cpu", trainable: bool = False) -> nn.Module:
    """The model of a packed checkpoint on the float path, in eval mode (module docstring)."""
    path = Path(path)
    header, tensors = read_packed(path)
    dtype = header_dtype(path, header)
    model = build_skeleton(path, header).to(dtype)
    check_modules(path, header, model)
    state = remainder_state(header, tensors)
    for name, entry in header["modules"].items():
        state[f"{name}.weight"] = dequantized_weight(name, entry, tensors)
        model.set_submodule(name, float_module(entry, trainable, dtype))
    check_state(path, {k: v.shape for k, v in model.state_dict().items()}, state)
    model.load_state_dict(state, strict=True)
    if header["quant_config"] is not None:  # the recorded QuantConfig: a trainable load saves as a fake-quant dir
        mark_quantized(model, header_quant_config(path, header))
    return model.to(device).eval()
