"""Straight-through estimators: forward values are the primitives', the backward pass is identity."""

from __future__ import annotations

import pytest
import torch

from xtc.quant.primitives import fake_quantize_symmetric, fake_quantize_weight
from xtc.quant.ste import BinarySTE, SymmetricActSTE, TernarySTE, WeightKBitSTE, fake_quant_weight_ste


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_weight_ste_forward_equals_primitive_and_backward_is_identity(bits):
    w = torch.randn(6, 10, requires_grad=True)
    q = fake_quant_weight_ste(w, bits, "tensor")
    assert torch.equal(q, fake_quantize_weight(w.detach(), bits, "tensor"))
    upstream = torch.randn(6, 10)
    q.backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_each_rule_is_a_named_function():
    w = torch.randn(3, 4, requires_grad=True)
    assert type(BinarySTE.apply(w, "tensor").grad_fn).__name__ == "BinarySTEBackward"
    assert type(TernarySTE.apply(w, "tensor").grad_fn).__name__ == "TernarySTEBackward"
    assert type(WeightKBitSTE.apply(w, 4, "tensor", True).grad_fn).__name__ == "WeightKBitSTEBackward"


def test_activation_ste_does_not_clip_the_gradient():
    x = torch.randn(2, 5, 8, requires_grad=True)
    static_max = torch.tensor(0.1)  # most of x lies outside this range and is clipped in the forward pass
    y = SymmetricActSTE.apply(x, 8, "tensor", static_max)
    assert torch.equal(y, fake_quantize_symmetric(x.detach(), 8, "tensor", static_max))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
