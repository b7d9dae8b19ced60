"""Straight-through estimators (docs/method.md, "Quantization"): the forward pass quantizes, the backward pass is identity.

XTC (like DeepSpeed's ``BinaryQuantizer``/``TernaryQuantizer``/``SymQuantizer``) uses the plain STE: the gradient
with respect to the latent full-precision tensor is the gradient with respect to its quantized value, with no
clipping outside the quantization range. Each rule is a named ``autograd.Function`` so a traceback or a profile
says which quantizer ran.
"""

from __future__ import annotations

import torch

from xtc.config import Granularity
from xtc.quant.primitives import fake_quantize_symmetric, fake_quantize_weight


class _IdentityBackward(torch.autograd.Function):
    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """Straight through: d(quantized)/d(latent) := identity; non-tensor inputs get no gradient."""
        return (grad_output,) + (None,) * ctx.num_extra


class BinarySTE(_IdentityBackward):
    """Forward: ``mean(|w_g|) * sign(w)`` per group. Backward: identity (plain STE, no clipping)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, granularity: Granularity | str) -> torch.Tensor:
        ctx.num_extra = 1
        return fake_quantize_weight(w, 1, granularity)


class TernarySTE(_IdentityBackward):
    """Forward: TWN ternary values ``alpha_g * {-1, 0, +1}``. Backward: identity (plain STE, no clipping)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, granularity: Granularity | str) -> torch.Tensor:
        ctx.num_extra = 1
        return fake_quantize_weight(w, 2, granularity)


class WeightKBitSTE(_IdentityBackward):
    """Forward: (a)symmetric k-bit weight, k in 3..8. Backward: identity (plain STE, no clipping)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, bits: int, granularity: Granularity | str, symmetric: bool) -> torch.Tensor:
        ctx.num_extra = 3
        return fake_quantize_weight(w, bits, granularity, symmetric)


class SymmetricActSTE(_IdentityBackward):
    """Forward: symmetric k-bit activation, dynamic per-group range or a static ``max_abs``.
    Backward: identity (plain STE; DeepSpeed's ``SymQuantizer`` does not clip the gradient either)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, bits: int, granularity: Granularity | str, max_abs: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.num_extra = 3
        return fake_quantize_symmetric(x, bits, granularity, max_abs)


class SharedActSTE(torch.autograd.Function):
    """Forward: an already quantized copy of ``x`` (``quantized``, computed by ``SymmetricActSTE`` from this very
    ``x``), returned as a view instead of quantizing ``x`` again. Backward: identity to ``x``, nothing to
    ``quantized``; so the graph has one straight-through node per consumer exactly as if each had quantized ``x``
    itself, and the gradients are the same bit for bit."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized.view_as(quantized)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


def fake_quant_weight_ste(w: torch.Tensor, bits: int, granularity: Granularity | str, symmetric: bool = True):
    """Dispatch a weight to its XTC rule by bit-width, with the straight-through gradient."""
    if bits == 1:
        return BinarySTE.apply(w, granularity)
    if bits == 2:
        return TernarySTE.apply(w, granularity)
    return WeightKBitSTE.apply(w, bits, granularity, symmetric)
