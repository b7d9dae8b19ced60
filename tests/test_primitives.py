"""Quantizer formulas (docs/method.md, "Quantization"), checked against the formulas written out by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xtc.quant.primitives import (
    dequantize,
    fake_quantize_symmetric,
    fake_quantize_weight,
    group_rows,
    quantize_asymmetric,
    quantize_binary,
    quantize_symmetric,
    quantize_ternary,
    quantize_weight,
)


def test_binary_is_mean_abs_times_sign():
    w = torch.tensor([[0.5, -1.0], [0.0, 2.5]])
    codes, alpha = quantize_binary(w)
    assert torch.equal(codes, torch.tensor([[1.0, -1.0], [0.0, 1.0]]))  # sign(0) = 0
    assert torch.equal(alpha, torch.tensor([[1.0]]))  # (0.5 + 1 + 0 + 2.5) / 4
    assert torch.equal(fake_quantize_weight(w, 1), torch.tensor([[1.0, -1.0], [0.0, 1.0]]))


def test_binary_per_row_has_one_scale_per_row():
    w = torch.tensor([[1.0, -3.0], [2.0, 2.0], [-0.5, 0.5]])
    codes, alpha = quantize_binary(w, "row")
    assert torch.equal(alpha, torch.tensor([[2.0], [2.0], [0.5]]))
    assert torch.equal(dequantize(codes, alpha, "row"), torch.tensor([[2.0, -2.0], [2.0, 2.0], [-0.5, 0.5]]))


def test_ternary_threshold_and_alpha():
    w = torch.tensor([1.0, -2.0, 0.1, 0.9, -0.2, 3.0])
    delta = 0.7 * w.abs().mean()  # 0.7 * 7.2 / 6 = 0.84
    codes, alpha = quantize_ternary(w)
    expected = torch.where(w > delta, 1.0, 0.0) - torch.where(w < -delta, 1.0, 0.0)
    assert torch.equal(codes, expected)
    kept = w.abs() > delta
    assert torch.allclose(alpha.flatten(), w.abs()[kept].mean().reshape(1))
    assert set(codes.tolist()) <= {-1.0, 0.0, 1.0}


def test_ternary_all_zero_group_gives_zero_not_nan():
    q = fake_quantize_weight(torch.zeros(4, 4), 2, "row")
    assert torch.equal(q, torch.zeros(4, 4))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_symmetric_codes_range_and_clipping_of_the_max(bits):
    x = torch.tensor([[-4.0, -1.0, 0.0, 0.3, 4.0]])
    codes, scale = quantize_symmetric(x, bits)
    half = 2 ** (bits - 1)
    assert torch.equal(scale, torch.tensor([[2 * 4.0 / 2**bits]]))
    assert codes.min() == -half and codes.max() == half - 1  # +M clips to (2^(k-1) - 1) * scale
    assert torch.equal(codes, (x / scale).round().clamp(-half, half - 1))


def test_symmetric_all_zero_token_stays_zero():
    x = torch.zeros(2, 3, 8)
    x[0, 1] = torch.arange(8.0)
    out = fake_quantize_symmetric(x, 8, "token")
    assert not out.isnan().any()
    assert torch.equal(out[1], torch.zeros(3, 8))


def test_per_token_scales_each_token_separately():
    x = torch.tensor([[[1.0, -0.5], [100.0, 50.0]]])  # (B=1, T=2, D=2)
    out = fake_quantize_symmetric(x, 8, "token")
    assert torch.equal(out[0, 0], fake_quantize_symmetric(x[0, 0], 8, "tensor"))
    assert torch.equal(out[0, 1], fake_quantize_symmetric(x[0, 1], 8, "tensor"))


def test_asymmetric_matches_reference_formula():
    x = torch.tensor([[-1.0, 0.0, 0.5, 3.0]])
    codes, scale, zp = quantize_asymmetric(x, 4)
    ref_scale = (3.0 - -1.0) / 16
    ref_zp = round(-1.0 / ref_scale) * ref_scale
    assert scale.item() == ref_scale and zp.item() == ref_zp
    assert torch.equal(codes, ((x - ref_zp) / ref_scale).round().clamp(0, 15))
    assert torch.equal(dequantize(codes, scale, zero_point=zp), codes * ref_scale + ref_zp)


def test_group_sizes_and_counts():
    w = torch.arange(24.0).reshape(4, 6)
    assert group_rows(w, "tensor").shape == (1, 24)
    assert group_rows(w, "row").shape == (4, 6)
    assert group_rows(w, "group:8").shape == (3, 8)
    assert group_rows(w, "groups:2").shape == (2, 12)
    assert group_rows(torch.zeros(2, 5, 6), "token").shape == (10, 6)


@pytest.mark.parametrize("spec, message", [("group:5", "group size 5 does not divide"), ("groups:7", "7 groups do not divide")])
def test_groups_that_do_not_divide_the_weight_are_an_error(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        fake_quantize_weight(torch.zeros(4, 6), 1, spec)
    assert "choose a divisor of 24" in str(err.value)


def test_unknown_granularity_and_bits_are_errors():
    with pytest.raises(ValueError, match="granularity 'col' is not understood"):
        group_rows(torch.zeros(2, 2), "col")
    with pytest.raises(ValueError, match="weight bits 9 are not supported"):
        quantize_weight(torch.zeros(2, 2), 9)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 8), cols=st.integers(1, 16), bits=st.sampled_from([1, 2, 3, 4, 8]),
    gran=st.sampled_from(["tensor", "row"]), seed=st.integers(0, 2**16),
)
def test_fake_quant_equals_dequantized_codes_and_uses_few_levels(rows, cols, bits, gran, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    codes, scale, *zp = quantize_weight(w, bits, gran)
    assert torch.equal(fake_quantize_weight(w, bits, gran), dequantize(codes, scale, gran, zp[0] if zp else None))
    assert torch.equal(codes, codes.round())
    levels = 3 if bits <= 2 else 2**bits
    assert codes.unique().numel() <= levels
    assert codes.min() >= -(2 ** max(bits - 1, 1)) and codes.max() <= 2 ** max(bits - 1, 1)


@pytest.mark.parametrize("bits, symmetric", [(1, True), (2, True), (4, True), (4, False)])
def test_fake_quant_weight_dequantizes_in_place_to_the_same_values(bits, symmetric):
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    codes, scale, *zero_point = quantize_weight(w, bits, "row", symmetric)
    expected = dequantize(codes.clone(), scale, "row", zero_point[0] if zero_point else None)
    assert torch.equal(fake_quantize_weight(w, bits, "row", symmetric), expected)
    out = dequantize(codes, scale, "row", zero_point[0] if zero_point else None, inplace=True)
    assert torch.equal(out, expected) and out.data_ptr() == codes.data_ptr()
