"""Bit packing: exact round trips for every bit-width and length, the pinned bit order, code encodings, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xtc.quant.packing import (
    PackedCodes,
    code_range,
    default_encoding,
    pack_bits,
    pack_codes,
    packed_numel,
    unpack_bits,
    unpack_codes,
)
from xtc.quant.primitives import quantize_weight


@st.composite
def codes_and_bits(draw):
    bits = draw(st.integers(1, 8))
    values = draw(st.lists(st.integers(0, 2**bits - 1), min_size=0, max_size=67))
    return torch.tensor(values, dtype=torch.uint8), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_bits())
def test_pack_unpack_round_trip_is_exact_for_every_width_and_length(case):
    codes, bits = case
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, codes.numel()), codes)


@settings(max_examples=200, deadline=None)
@given(codes_and_bits())
def test_bit_order_is_little_endian_lsb_first(case):
    """The packed bytes, read as one little-endian integer, are sum(code_i << (bits * i))."""
    codes, bits = case
    expected = sum(int(c) << (bits * i) for i, c in enumerate(codes.tolist()))
    assert int.from_bytes(bytes(pack_bits(codes, bits).tolist()), "little") == expected


def test_bit_order_examples():
    assert pack_bits(torch.tensor([1, 2, 3, 0], dtype=torch.uint8), 2).tolist() == [0b00_11_10_01]
    # 3-bit codes straddle bytes: 5 + (3 << 3) + (7 << 6) = 477 = 0x01DD
    assert pack_bits(torch.tensor([5, 3, 7], dtype=torch.uint8), 3).tolist() == [0xDD, 0x01]
    ones = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.uint8)
    assert torch.equal(pack_bits(ones, 1), torch.from_numpy(np.packbits(ones.numpy(), bitorder="little")))


def test_multidimensional_codes_are_packed_flat():
    codes = torch.randint(0, 16, (3, 5), dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(codes, 4), 4, 15), codes.reshape(-1))


@pytest.mark.parametrize("bits", [0, 9, True, 2.0])
def test_bad_bits_are_rejected(bits):
    with pytest.raises(ValueError, match="cannot be packed: use an integer from 1 to 8"):
        pack_bits(torch.zeros(4, dtype=torch.uint8), bits)


def test_pack_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs uint8 codes, got torch.int64"):
        pack_bits(torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="code 4 does not fit in 2 bits"):
        pack_bits(torch.tensor([0, 4], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="10 codes of 3 bits take 4 bytes, but 3 were given"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 3, 10)
    with pytest.raises(ValueError, match="needs a 1-D uint8 tensor"):
        unpack_bits(torch.zeros(3, dtype=torch.int32), 3, 8)
    with pytest.raises(ValueError, match="numel=-1 must be a non-negative integer"):
        unpack_bits(torch.zeros(0, dtype=torch.uint8), 3, -1)


# ---------------------------------------------------------------------------------------------- code encodings
@settings(max_examples=120, deadline=None)
@given(
    bits=st.integers(1, 8),
    symmetric=st.booleans(),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 13)),
    seed=st.integers(0, 2**16),
)
def test_quantizer_codes_round_trip_exactly(bits, symmetric, shape, seed):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    codes = quantize_weight(w, bits, "tensor", symmetric)[0]
    packed = pack_codes(codes, bits, symmetric)
    assert packed.data.numel() == packed_numel(codes.numel(), packed.stored_bits)
    assert packed.stored_bits == default_encoding(bits, symmetric)[1]  # randn has no exact zero
    assert torch.equal(unpack_codes(packed, codes.numel()).reshape(shape), codes)


@pytest.mark.parametrize(
    ("bits", "symmetric", "encoding", "stored"),
    [(1, True, "sign", 1), (2, True, "ternary", 2), (3, True, "offset", 3), (8, True, "offset", 8),
     (4, False, "unsigned", 4), (2, False, "ternary", 2)],
)
def test_encoding_per_scheme(bits, symmetric, encoding, stored):
    low, high = code_range(bits, symmetric)
    codes = torch.arange(low, high + 1, dtype=torch.float32)
    if bits == 1:
        codes = torch.tensor([-1.0, 1.0, 1.0])
    packed = pack_codes(codes, bits, symmetric)
    assert (packed.encoding, packed.stored_bits, packed.zeros) == (encoding, stored, None)
    assert torch.equal(unpack_codes(packed, codes.numel()), codes)


def test_symmetric_offset_maps_the_most_negative_code_to_zero():
    packed = pack_codes(torch.tensor([-4.0, 3.0, 0.0]), 3)
    assert unpack_bits(packed.data, 3, 3).tolist() == [0, 7, 4]


def test_binary_with_few_zeros_keeps_one_bit_and_lists_the_zero_positions():
    codes = torch.ones(64, 32)
    codes[::2] = -1
    codes[0] = 0  # a zero padding row, as a random BERT's word embeddings have
    packed = pack_codes(codes, 1)
    assert (packed.encoding, packed.stored_bits) == ("sign+zeros", 1)
    assert packed.zeros.dtype == torch.int32 and packed.zeros.tolist() == list(range(32))
    assert packed.data.numel() == 64 * 32 // 8
    assert torch.equal(unpack_codes(packed, codes.numel()).reshape(64, 32), codes)


def test_binary_with_many_zeros_falls_back_to_two_bit_codes():
    codes = torch.tensor([1.0, -1.0, 0.0, 1.0] * 16)  # 1/4 zeros: positions would cost more than 2 bits each
    packed = pack_codes(codes, 1)
    assert (packed.encoding, packed.stored_bits, packed.zeros) == ("ternary", 2, None)
    assert torch.equal(unpack_codes(packed, codes.numel()), codes)


def test_zero_list_versus_two_bits_boundary():
    """At n = 256 codes, 1 bit costs 32 bytes, 2 bits 64: up to 8 int32 zero positions are cheaper."""
    for zeros, expected in ((8, "sign+zeros"), (9, "ternary")):
        codes = torch.ones(256)
        codes[:zeros] = 0
        packed = pack_codes(codes, 1)
        assert packed.encoding == expected
        assert torch.equal(unpack_codes(packed, 256), codes)


def test_code_errors():
    with pytest.raises(ValueError, match=r"3-bit symmetric codes must lie in \[-4, 3\], got values in \[-5, 0\]"):
        pack_codes(torch.tensor([-5.0, 0.0]), 3)
    with pytest.raises(ValueError, match="unknown code encoding 'nibble'"):
        unpack_codes(PackedCodes("nibble", 4, torch.zeros(1, dtype=torch.uint8)), 2)
    with pytest.raises(ValueError, match="needs the zero positions"):
        unpack_codes(PackedCodes("sign+zeros", 1, torch.zeros(1, dtype=torch.uint8)), 8)
    with pytest.raises(ValueError, match="zero positions fall outside a tensor of 8 elements"):
        unpack_codes(PackedCodes("sign+zeros", 1, torch.zeros(1, dtype=torch.uint8), torch.tensor([8])), 8)


def test_unpacked_codes_take_the_requested_dtype():
    packed = pack_codes(torch.tensor([1.0, -1.0]), 1)
    assert unpack_codes(packed, 2, torch.bfloat16).dtype == torch.bfloat16
