"""Forward + backward of one W1A8 linear at BERT-base shapes (batch 32 x 128 tokens), on CPU.

Candidates: ``nn.Linear`` (FP32), xtc's ``QuantLinear`` (1-bit weight, one scale per matrix; 8-bit symmetric
dynamic per-token input), and DeepSpeed 0.19.6's ``LinearLayer_Compress`` with the same setting, enabled the way its
scheduler does (weight quantization in forward, dynamic symmetric activation quantization).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.timing import interleaved
from xtc.quant import QuantLinear

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # (in_features, out_features): QKV/attn-out, FFN in, FFN out


def _deepspeed_linear(linear: nn.Linear) -> nn.Module | None:
    try:
        from deepspeed.compression.basic_layer import LinearLayer_Compress
    except ImportError:
        return None
    layer = LinearLayer_Compress(linear.in_features, linear.out_features)
    layer.load_state_dict(linear.state_dict())
    layer.enable_weight_quantization(1, 1, 0, True, "symmetric", 1)
    layer.weight_quantization_enabled = True
    layer.enable_activation_quantization(8, "symmetric", "dynamic")
    layer.activation_quantization_enabled = True
    return layer


def _step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)

    return run


def run(quick: bool = False, tokens: tuple[int, int] = (32, 128)) -> dict:
    torch.manual_seed(0)
    rounds = 5 if quick else 30
    batch, seq = tokens if not quick else (8, 128)
    results = {}
    for in_features, out_features in SHAPES:
        linear = nn.Linear(in_features, out_features)
        x = torch.randn(batch, seq, in_features, requires_grad=True)
        grad = torch.randn(batch, seq, out_features)
        candidates = {
            "nn_linear": _step(linear, x, grad),
            "xtc_w1a8": _step(QuantLinear.from_float(copy.deepcopy(linear), weight_bits=1, act_bits=8), x, grad),
        }
        ds = _deepspeed_linear(copy.deepcopy(linear))
        if ds is not None:
            candidates["deepspeed_w1a8"] = _step(ds, x, grad)
        median = interleaved(candidates, rounds)
        entry = {f"{k}_ms": round(v * 1e3, 3) for k, v in median.items()}
        entry["xtc_over_nn_linear"] = round(median["xtc_w1a8"] / median["nn_linear"], 3)
        if ds is not None:
            entry["xtc_over_deepspeed"] = round(median["xtc_w1a8"] / median["deepspeed_w1a8"], 3)
        results[f"{in_features}x{out_features}"] = entry
    return {
        "what": "forward+backward of one W1A8 linear, median over interleaved rounds",
        "tokens": [batch, seq], "rounds": rounds, "threads": torch.get_num_threads(), "shapes": results,
    }
