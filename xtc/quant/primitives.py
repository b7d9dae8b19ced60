"""Pure tensor functions for the XTC quantizers (docs/method.md, "Quantization").

Every scheme is split into ``quantize_*`` -> ``(codes, scale[, zero_point])`` and one ``dequantize``. Codes are
integer-valued tensors (kept in the input's float dtype so training never converts); fake quantization is
``dequantize(*quantize_*(x))``, and the packed export stores the very same codes and scales, so fake-quant
training, export and unpacking cannot disagree.

The arithmetic follows DeepSpeed 0.19.6's ``deepspeed/compression/utils.py`` operation for operation (L1 norm via
``norm(p=1)``, ``2 * max / 2**k`` scales, division rather than reciprocal multiplication), so the outputs are
bit-identical to the original implementation (pinned by ``tests/test_parity_deepspeed.py``). Two deliberate
differences, both outside the values DeepSpeed can produce: an all-zero group gets scale 0 codes and output
0 instead of NaN (0/0), and ternary groups with no weight above the threshold get alpha 0 instead of NaN.

Groups are contiguous chunks of the flattened tensor; ``group_rows`` turns a granularity into a ``(G, N)`` view.
"""

from __future__ import annotations

import torch

from xtc.config import Granularity, NumGroups, PerGroup, PerRow, PerTensor, PerToken, parse_granularity

TERNARY_THRESHOLD = 0.7  # TWN: delta = 0.7 * mean(|w|)


def group_rows(x: torch.Tensor, granularity: Granularity | str) -> torch.Tensor:
    """View ``x`` as ``(num_groups, group_size)``: one quantization scale per row of the result."""
    granularity = parse_granularity(granularity)
    numel = x.numel()
    if isinstance(granularity, PerTensor):
        return x.reshape(1, numel)  # (1, numel)
    if isinstance(granularity, PerRow):
        if x.dim() < 2:
            raise ValueError(f"per-row quantization needs a matrix, got shape {tuple(x.shape)}; use 'tensor'")
        return x.reshape(x.shape[0], -1)  # (out, in)
    if isinstance(granularity, PerToken):
        return x.reshape(-1, x.shape[-1])  # (tokens, hidden)
    if isinstance(granularity, (PerGroup, NumGroups)):
        per_group = isinstance(granularity, PerGroup)
        n = granularity.size if per_group else granularity.count
        if numel % n:
            what, kind = (f"group size {n} does not", "group") if per_group else (f"{n} groups do not", "groups")
            raise ValueError(
                f"{what} divide a tensor of shape {tuple(x.shape)} ({numel} elements); choose a divisor of "
                f"{numel}, e.g. '{kind}:{_nearest_divisor(numel, n)}'"
            )
        size = n if per_group else numel // n
        return x.reshape(numel // size, size)  # (G, size)
    raise AssertionError(f"unhandled granularity {granularity!r}")


def _nearest_divisor(n: int, target: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))


def quantize_binary(x: torch.Tensor, granularity: Granularity | str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """BWN: ``alpha_g = mean(|w_g|)``, codes ``sign(w)`` in {-1, 0, +1} (sign(0) = 0). Returns ``(codes, alpha)``."""
    flat = group_rows(x, granularity)  # (G, N)
    alpha = flat.norm(p=1, dim=1, keepdim=True).div(flat.shape[1])  # (G, 1)
    return flat.sign().reshape(x.shape), alpha


def quantize_ternary(x: torch.Tensor, granularity: Granularity | str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: ``delta_g = 0.7 mean(|w_g|)``; codes in {-1, 0, +1}; ``alpha_g`` = mean |w| over the kept entries."""
    flat = group_rows(x, granularity)  # (G, N)
    delta = (TERNARY_THRESHOLD * flat.norm(p=1, dim=1).div(flat.shape[1])).view(-1, 1)  # (G, 1)
    pos = (flat > delta).to(x.dtype)
    neg = (flat < -delta).to(x.dtype)
    mask = (flat.abs() > delta).to(x.dtype)
    kept = mask.sum(dim=1)
    alpha = (mask * flat).abs().sum(dim=1) / kept
    alpha = torch.where(kept > 0, alpha, torch.zeros_like(alpha)).view(-1, 1)  # (G, 1); DeepSpeed gives NaN here
    return (pos - neg).reshape(x.shape), alpha


def max_abs_per_row(flat: torch.Tensor) -> torch.Tensor:
    """``max |x|`` of each row as ``max(max x, -min x)``: the same values as ``amax(abs(x))`` without allocating
    ``abs(x)``, which on CPU costs ~15x the reductions for an activation-sized tensor (page faults on fresh memory)."""
    return torch.maximum(flat.amax(dim=-1, keepdim=True), flat.amin(dim=-1, keepdim=True).neg_())  # (G, 1)


def symmetric_scale(max_abs: torch.Tensor, bits: int) -> torch.Tensor:
    """``scale = 2 M / 2^k`` (so +M itself clips to ``(2^(k-1) - 1) * scale``); 0 becomes 1 to avoid 0/0."""
    scale = 2 * max_abs / 2**bits
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def quantize_symmetric(
    x: torch.Tensor,
    bits: int,
    granularity: Granularity | str = "tensor",
    max_abs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric k-bit: codes ``clamp(round(x / scale), -2^(k-1), 2^(k-1) - 1)``. Returns ``(codes, scale)``.

    ``max_abs`` (a scalar tensor) gives a static range instead of the dynamic per-group ``max |x|``.
    """
    flat = group_rows(x, granularity)  # (G, N)
    max_abs = max_abs_per_row(flat) if max_abs is None else max_abs.reshape(1, 1)
    scale = symmetric_scale(max_abs, bits)
    half = 2**bits // 2
    codes = (flat / scale).round_().clamp_(-half, half - 1)
    return codes.reshape(x.shape), scale


def quantize_asymmetric(
    x: torch.Tensor,
    bits: int,
    granularity: Granularity | str = "tensor",
    min_max: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric k-bit: ``scale = (max - min) / 2^k``, ``zp = round(min / scale) * scale``,
    codes ``clamp(round((x - zp) / scale), 0, 2^k - 1)``. Returns ``(codes, scale, zero_point)``."""
    flat = group_rows(x, granularity)  # (G, N)
    if min_max is None:
        low = flat.amin(dim=-1, keepdim=True)  # (G, 1)
        high = flat.amax(dim=-1, keepdim=True)
    else:
        low, high = (t.reshape(1, 1) for t in min_max)
    scale = (high - low) / 2**bits
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero_point = (low / scale).round() * scale
    codes = ((flat - zero_point) / scale).round_().clamp_(0, 2**bits - 1)
    return codes.reshape(x.shape), scale, zero_point


def dequantize(
    codes: torch.Tensor,
    scale: torch.Tensor,
    granularity: Granularity | str = "tensor",
    zero_point: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``codes * scale (+ zero_point)`` per group; the inverse shared by fake quantization and unpacking.

    ``inplace=True`` writes the result into ``codes`` (the same values: the same multiply and add, in place), for
    callers that own a fresh codes tensor and would otherwise materialise a second full-size copy.
    """
    flat = group_rows(codes, granularity)  # (G, N)
    if inplace:
        out = flat.mul_(scale.to(flat.dtype))
        if zero_point is not None:
            out.add_(zero_point.to(flat.dtype))
    else:
        out = flat * scale.to(flat.dtype)
        if zero_point is not None:
            out = out + zero_point.to(flat.dtype)
    return out.reshape(codes.shape)


def quantize_weight(
    w: torch.Tensor, bits: int, granularity: Granularity | str = "tensor", symmetric: bool = True
) -> tuple[torch.Tensor, ...]:
    """The XTC weight rule by bit-width: 1 -> binary, 2 -> ternary, 3..8 -> (a)symmetric k-bit.

    Returns ``(codes, scale)`` or ``(codes, scale, zero_point)`` for asymmetric k-bit.
    """
    if bits == 1:
        return quantize_binary(w, granularity)
    if bits == 2:
        return quantize_ternary(w, granularity)
    if 3 <= bits <= 8:
        return quantize_symmetric(w, bits, granularity) if symmetric else quantize_asymmetric(w, bits, granularity)
    raise ValueError(f"weight bits {bits!r} are not supported: use 1 (binary), 2 (ternary) or 3..8")


def fake_quantize_weight(
    w: torch.Tensor, bits: int, granularity: Granularity | str = "tensor", symmetric: bool = True
) -> torch.Tensor:
    """``dequantize(quantize_weight(w))``: the value a quantized weight takes in the forward pass.

    The codes are a fresh tensor of this call, so they are dequantized in place: one full-size tensor per weight
    and training step instead of two (codes, then their copy times the scale).
    """
    codes, scale, *zero_point = quantize_weight(w, bits, granularity, symmetric)
    return dequantize(codes, scale, granularity, zero_point[0] if zero_point else None, inplace=True)


def fake_quantize_symmetric(
    x: torch.Tensor, bits: int, granularity: Granularity | str = "token", max_abs: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric k-bit fake quantization of an activation (per token by default: XTC's dynamic A8).

    Same numbers as ``dequantize(*quantize_symmetric(...))``; the multiply is done in place because activations
    are the large tensors of a training step.
    """
    codes, scale = quantize_symmetric(x, bits, granularity, max_abs)
    return group_rows(codes, granularity).mul_(scale).reshape(x.shape)  # (G, N) -> x.shape
