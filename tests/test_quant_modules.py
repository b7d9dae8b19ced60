"""QuantLinear / QuantEmbedding / ActQuantizer: forward values, gradients, from_float / to_float."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xtc.quant import ActQuantizer, QuantEmbedding, QuantLinear
from xtc.quant.primitives import fake_quantize_symmetric, fake_quantize_weight


def test_quant_linear_forward_is_quantized_input_times_quantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    q = QuantLinear.from_float(linear, weight_bits=1)
    x = torch.randn(2, 5, 16)
    expected = F.linear(fake_quantize_symmetric(x, 8, "token"), fake_quantize_weight(linear.weight, 1), linear.bias)
    assert torch.equal(q(x), expected)


def test_quant_linear_without_activation_quantizer():
    linear = nn.Linear(16, 8)
    q = QuantLinear.from_float(linear, weight_bits=2, act_bits=None)
    x = torch.randn(4, 16)
    assert torch.equal(q(x), F.linear(x, fake_quantize_weight(linear.weight, 2), linear.bias))


def test_gradients_reach_the_latent_weight_and_the_input():
    q = QuantLinear.from_float(nn.Linear(16, 8), weight_bits=1)
    x = torch.randn(3, 16, requires_grad=True)
    q(x).pow(2).sum().backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0
    assert q.bias.grad is not None and x.grad is not None and x.grad.abs().sum() > 0


def test_latent_weight_changes_the_output_only_through_its_quantized_value():
    q = QuantLinear.from_float(nn.Linear(8, 4), weight_bits=1, act_bits=None)
    x = torch.randn(2, 8)
    before = q(x)
    with torch.no_grad():  # scaling the latent weight by 2 scales alpha by 2, sign unchanged
        q.weight.mul_(2)
    assert torch.allclose(q(x) - q.bias, 2 * (before - q.bias))


def test_from_float_to_float_round_trip_is_exact():
    linear = nn.Linear(12, 6)
    back = QuantLinear.from_float(linear, weight_bits=1).to_float()
    assert isinstance(back, nn.Linear) and type(back) is nn.Linear
    assert torch.equal(back.weight, linear.weight) and torch.equal(back.bias, linear.bias)
    snapped = QuantLinear.from_float(linear, weight_bits=1).to_float(quantized=True)
    assert torch.equal(snapped.weight, fake_quantize_weight(linear.weight, 1))


def test_state_dict_keys_match_nn_linear():
    linear = nn.Linear(12, 6)
    assert set(QuantLinear.from_float(linear, 1).state_dict()) == set(linear.state_dict())


def test_static_activation_range_is_an_ema_with_momentum():
    act = ActQuantizer(8, range="static", granularity="tensor", momentum=0.95).train()
    a = torch.tensor([-1.0, 2.0])
    b = torch.tensor([-3.0, 4.0])
    act(a)
    assert torch.equal(act.min_max, torch.tensor([-1.0, 2.0]))  # initialised by the first batch
    act(b)
    assert torch.allclose(act.min_max, torch.tensor([-1.0 * 0.95 - 3.0 * 0.05, 2.0 * 0.95 + 4.0 * 0.05]))
    frozen = act.min_max.clone()
    act.eval()
    out = act(torch.tensor([-10.0, 10.0]))
    assert torch.equal(act.min_max, frozen)  # eval mode does not update the range
    assert out.max() <= frozen.abs().max()  # and values outside it are clipped


def test_static_range_calibrates_on_first_batch_even_in_eval():
    act = ActQuantizer(8, range="static", granularity="tensor").eval()
    x = torch.tensor([-0.5, 1.5, 0.25])
    assert torch.equal(act(x), fake_quantize_symmetric(x, 8, "tensor"))


def test_quant_embedding_quantizes_each_row_and_only_looks_up_rows():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8, padding_idx=0)
    q = QuantEmbedding.from_float(emb, weight_bits=1)
    ids = torch.tensor([[1, 5, 5, 0], [19, 3, 2, 0]])
    full_table = fake_quantize_weight(emb.weight, 1, "row")
    assert torch.equal(q(ids), F.embedding(ids, full_table))
    q(ids).sum().backward()
    assert torch.equal(q.weight.grad[0], torch.zeros(8))  # padding row gets no gradient, as in nn.Embedding
    assert q.weight.grad[5].abs().sum() > 0
    back = q.to_float()
    assert torch.equal(back.weight, emb.weight) and back.padding_idx == 0


def test_quant_embedding_tensor_granularity_uses_the_whole_table():
    emb = nn.Embedding(10, 4)
    q = QuantEmbedding.from_float(emb, weight_bits=2, granularity="tensor")
    ids = torch.tensor([1, 2, 3])
    assert torch.equal(q(ids), F.embedding(ids, fake_quantize_weight(emb.weight, 2, "tensor")))


@pytest.mark.parametrize("bits", [0, 9])
def test_bad_weight_bits(bits):
    with pytest.raises(ValueError, match=f"weight bits {bits} are not supported: use 1 \\(binary\\), 2 \\(ternary\\) or 3..8"):
        QuantLinear.from_float(nn.Linear(4, 4), weight_bits=bits)


@pytest.mark.parametrize("bits", [2, 3, 16])
def test_bad_activation_bits(bits):
    with pytest.raises(ValueError, match=f"activation bits {bits} are not supported: use 8 \\(XTC\\), 4..7, or none"):
        QuantLinear.from_float(nn.Linear(4, 4), weight_bits=1, act_bits=bits)
