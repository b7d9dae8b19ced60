"""Bit packing of quantization codes: the low-level half of the packed checkpoint (``xtc.packed.export`` is the file).

Two layers, both pure vectorised torch (no Python loop over elements):

* ``pack_bits`` / ``unpack_bits`` store unsigned ``bits``-bit integers (``bits`` in 1..8) back to back.
  **Bit order: little-endian, LSB first.** Code ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of one bit
  stream, its least significant bit first, and stream bit ``j`` is bit ``j % 8`` (value ``2 ** (j % 8)``) of byte
  ``j // 8``. So eight 1-bit codes fill a byte (code 0 in bit 0, as ``numpy.packbits(bitorder="little")``), four
  2-bit codes fill a byte, and 3-, 5-, 6- and 7-bit codes straddle byte boundaries. The last byte is zero-padded;
  ``n`` codes take exactly ``ceil(n * bits / 8)`` bytes.
* ``pack_codes`` / ``unpack_codes`` map the integer-valued float codes of ``xtc.quant.primitives`` to those
  unsigned integers, one *encoding* per scheme:

  ===============  ============  =====================================================================
  encoding         stored bits   mapping (code -> stored unsigned integer)
  ===============  ============  =====================================================================
  ``sign``         1             binary: +1 -> 1, -1 -> 0 (the tensor holds no 0 code)
  ``sign+zeros``   1             binary with exact zeros: as ``sign`` plus the sorted flat positions of
                                 the 0 codes (int32, int64 beyond 2**31 elements)
  ``ternary``      2             ternary {-1, 0, +1} -> {0, 1, 2}; also binary with many zeros
  ``offset``       k             symmetric k-bit [-2**(k-1), 2**(k-1) - 1] -> [0, 2**k - 1] (code + 2**(k-1))
  ``unsigned``     k             asymmetric k-bit codes are already [0, 2**k - 1]
  ===============  ============  =====================================================================

Why binary needs a zero case: BWN codes are ``sign(w)`` with ``sign(0) = 0``, so an exact-zero latent weight
quantizes to 0 in the fake-quant model, and a 1-bit code cannot say so. Exact zeros are rare but real: a
randomly initialised BERT zeroes the padding row of its word embeddings (``padding_idx`` keeps it zero through
training), and float32 normal init draws a few exact zeros at BERT-base scale (5 in a 1-layer BERT-base). A sparse list of zero positions keeps the 1-bit cost (768 positions = 3 KiB for one padding row); when
the list would cost more than a 2-bit code per element (more than 1/32 of the codes are zero at int32 positions),
the tensor is stored with the 2-bit ``ternary`` encoding instead. Both are exact, which is the point: the
unpacked codes equal the fake-quant codes bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ENCODINGS = ("sign", "sign+zeros", "ternary", "offset", "unsigned")


def code_mapping(encoding: str, stored_bits: int) -> tuple[int, int]:
    """``(mul, sub)`` of an encoding: the stored unsigned value ``u`` is the code ``u * mul - sub`` (the one map from
    stored bits to codes; every decoder -- ``unpack_codes``, the int8 engine, the packed embedding -- uses it)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown code encoding {encoding!r}: expected one of {list(ENCODINGS)}")
    if encoding in ("sign", "sign+zeros"):
        return 2, 1
    if encoding == "ternary":
        return 1, 1
    return 1, (2 ** (stored_bits - 1) if encoding == "offset" else 0)


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits={bits!r} cannot be packed: use an integer from 1 to 8")


def packed_numel(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take: ``ceil(numel * bits / 8)``."""
    _check_bits(bits)
    return -(-numel * bits // 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes (a uint8 tensor of any shape, values ``< 2**bits``) into a flat uint8 tensor.

    Little-endian, LSB first (see the module docstring); the result has ``packed_numel(codes.numel(), bits)``
    bytes and ``unpack_bits(result, bits, codes.numel())`` returns ``codes.reshape(-1)``.
    """
    _check_bits(bits)
    if codes.dtype != torch.uint8:
        raise ValueError(f"pack_bits needs uint8 codes, got {codes.dtype}; convert with codes.to(torch.uint8)")
    flat = codes.reshape(-1)
    if flat.numel() and int(flat.max()) >= 2**bits:
        raise ValueError(
            f"code {int(flat.max())} does not fit in {bits} bits (max {2**bits - 1}); "
            f"pack with more bits or map the codes with pack_codes"
        )
    return _pack_unsigned(flat, bits)


def _pack_unsigned(flat: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return flat.clone()
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte, no bit stream needed
        per_byte = 8 // bits
        flat = torch.cat([flat, flat.new_zeros(-flat.numel() % per_byte)]) if flat.numel() % per_byte else flat
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=flat.device)
        return (flat.view(-1, per_byte) << shifts).sum(dim=1, dtype=torch.uint8)  # (bytes,): disjoint fields
    shifts = torch.arange(bits, dtype=torch.uint8, device=flat.device)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)  # (n * bits,): bit b of code i at i * bits + b
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    weights = torch.arange(8, dtype=torch.uint8, device=flat.device)
    return (stream.view(-1, 8) << weights).sum(dim=1, dtype=torch.uint8)  # (bytes,): disjoint bits, sum == or


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``numel`` codes of ``packed`` as a flat uint8 tensor."""
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"unpack_bits needs a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel={numel!r} must be a non-negative integer")
    expected = packed_numel(numel, bits)
    if packed.numel() != expected:
        raise ValueError(
            f"{numel} codes of {bits} bits take {expected} bytes, but {packed.numel()} were given; "
            "the packed data does not belong to this shape"
        )
    if bits == 8:
        return packed.clone()
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        return ((packed.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1)[:numel]  # (numel,)
    weights = torch.arange(8, dtype=torch.uint8, device=packed.device)
    stream = ((packed.unsqueeze(1) >> weights) & 1).reshape(-1)[: numel * bits]  # (numel * bits,)
    shifts = torch.arange(bits, dtype=torch.uint8, device=packed.device)
    return (stream.view(numel, bits) << shifts).sum(dim=1, dtype=torch.uint8)  # (numel,)


# ---------------------------------------------------------------------------------------------- code encodings
@dataclass(frozen=True)
class PackedCodes:
    """One weight's codes as stored: ``data`` (packed uint8), ``zeros`` (flat positions, ``sign+zeros`` only)."""

    encoding: str
    stored_bits: int
    data: torch.Tensor
    zeros: torch.Tensor | None = None


def default_encoding(bits: int, symmetric: bool = True) -> tuple[str, int]:
    """``(encoding, stored_bits)`` of a ``bits``-bit weight whose binary codes hold no zero."""
    _check_bits(bits)
    if bits == 1:
        return "sign", 1
    if bits == 2:
        return "ternary", 2
    return ("offset" if symmetric else "unsigned"), bits


def code_range(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """The closed range of the codes ``quantize_weight`` produces at ``bits`` bits."""
    _check_bits(bits)
    if bits <= 2:
        return -1, 1
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def pack_codes(codes: torch.Tensor, bits: int, symmetric: bool = True) -> PackedCodes:
    """Pack the integer-valued float codes of one weight (``quantize_weight``'s first output) by their scheme.

    Binary codes that hold exact zeros get ``sign+zeros`` or ``ternary``, whichever is smaller (module docstring).
    """
    encoding, stored_bits = default_encoding(bits, symmetric)
    flat = codes.detach().reshape(-1)
    low, high = code_range(bits, symmetric)
    if flat.numel():
        found = [int(v) for v in torch.aminmax(flat)]
        if found[0] < low or found[1] > high:
            raise ValueError(
                f"{bits}-bit {'symmetric' if symmetric else 'asymmetric'} codes must lie in [{low}, {high}], got "
                f"values in {found}; pass the codes of quantize_weight(w, {bits}, symmetric={symmetric})"
            )
    zeros = None
    if bits == 1:
        count = flat.numel() - int(torch.count_nonzero(flat))
        if count:
            index_dtype = torch.int32 if flat.numel() < 2**31 else torch.int64
            index_bytes = torch.empty((), dtype=index_dtype).element_size()
            if packed_numel(flat.numel(), 1) + count * index_bytes <= packed_numel(flat.numel(), 2):
                encoding = "sign+zeros"
                zeros = (flat == 0).nonzero().reshape(-1).to(index_dtype)
            else:
                encoding, stored_bits = "ternary", 2
    unsigned = _to_unsigned(flat, encoding, stored_bits)
    return PackedCodes(encoding, stored_bits, _pack_unsigned(unsigned, stored_bits), zeros)


def unpack_codes(packed: PackedCodes, numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The flat float codes that ``pack_codes`` packed, bit for bit (``-1.0``, ``0.0``, ``+1.0``, ...)."""
    mul, sub = code_mapping(packed.encoding, packed.stored_bits)
    codes = unpack_bits(packed.data, packed.stored_bits, numel).to(dtype).mul_(mul).sub_(sub)
    if packed.encoding == "sign+zeros":
        if packed.zeros is None:
            raise ValueError("encoding 'sign+zeros' needs the zero positions, but none were given")
        if packed.zeros.numel() and not (0 <= int(packed.zeros.min()) and int(packed.zeros.max()) < numel):
            raise ValueError(f"zero positions fall outside a tensor of {numel} elements; the data is corrupt")
        codes[packed.zeros.long()] = 0
    return codes


def _to_unsigned(flat: torch.Tensor, encoding: str, stored_bits: int) -> torch.Tensor:
    """The inverse of ``code_mapping``: ``u = (code + sub) // mul`` (a binary zero maps to 0; its position is kept
    apart, ``sign+zeros``)."""
    mul, sub = code_mapping(encoding, stored_bits)
    return flat.to(torch.int16).add_(sub).div_(mul, rounding_mode="floor").to(torch.uint8)
