"""Packed inference modules: ``PackedLinear`` / ``PackedEmbedding``, what ``xtc.packed.load`` builds.

They *are* ``QuantLinear`` / ``QuantEmbedding`` -- same forward, same activation quantizer -- whose weight holds the
stored quantized tensor ``dequantize(codes, scale)`` instead of a latent FP weight, and whose weight rule is
``StoredWeight``: the identity, carrying the bits, granularity and symmetry the codes were made with. The forward is
therefore the fake-quant forward with ``Q(W)`` already applied, and the logits equal the exported model's exactly.
Nothing here trains (the weight has ``requires_grad=False``); ``xtc.packed.load(path, trainable=True)`` gives fake-quant modules.
"""

from __future__ import annotations

import torch
from torch import nn

from xtc.config import Granularity
from xtc.quant.modules import ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer
from xtc.quant.primitives import group_rows


class StoredWeight(WeightQuantizer):
    """The weight rule of a stored, already quantized weight: the identity (with the rule's bits, for accounting)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise ValueError("a packed module holds no latent weight to quantize; export the fake-quant model, or load the "
                         "checkpoint with xtc.packed.load(path, trainable=True) first")


class _StoredRule:
    """The stored rule's ``bits`` / ``granularity`` / ``symmetric``, read on the module as well."""

    weight_quantizer: StoredWeight

    @property
    def bits(self) -> int:
        return self.weight_quantizer.bits

    @property
    def granularity(self) -> Granularity:
        return self.weight_quantizer.granularity

    @property
    def symmetric(self) -> bool:
        return self.weight_quantizer.symmetric


class PackedLinear(_StoredRule, QuantLinear):
    """``y = A(x) W_q^T + b`` with ``W_q`` the stored quantized weight (no latent weight, nothing to train)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, act_quantizer: ActQuantizer | None,
                 bits: int, granularity: Granularity | str, symmetric: bool, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias, StoredWeight(bits, granularity, symmetric), act_quantizer,
                         dtype=dtype)
        self.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


class PackedEmbedding(_StoredRule, QuantEmbedding):
    """An embedding table holding the stored quantized rows (equal to ``QuantEmbedding``'s looked-up rows)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, bits: int,
                 granularity: Granularity | str, symmetric: bool, dtype: torch.dtype | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx, StoredWeight(bits, granularity, symmetric),
                         dtype=dtype)
        self.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"


def weight_spec(module: nn.Module) -> tuple[int, str, bool] | None:
    """``(bits, granularity, symmetric)`` of a quantized (fake-quant or packed) module, else None."""
    if isinstance(module, (QuantLinear, QuantEmbedding)):
        q = module.weight_quantizer
        return q.bits, str(q.granularity), q.symmetric
    return None


def num_scales(shape: list[int] | torch.Size, granularity: Granularity | str) -> int:
    """How many scales a weight of ``shape`` has at ``granularity`` (from the shape alone, on the meta device)."""
    return group_rows(torch.empty(tuple(shape), device="meta"), granularity).shape[0]
