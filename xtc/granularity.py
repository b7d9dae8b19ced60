"""How quantization scales are shared: per tensor, per row, per token, per group of N elements, N equal groups.

The config spells a granularity as text (``'tensor'``, ``'row'``, ``'token'``, ``'group:N'``, ``'groups:N'``);
``parse_granularity`` turns it into one of the frozen classes below, which ``xtc.quant.primitives`` dispatches on.
Re-exported by ``xtc.config``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor (the paper's FP32 setting for encoder linears)."""

    def __str__(self) -> str:
        return "tensor"


@dataclass(frozen=True)
class PerRow:
    """One scale per row of the ``[out, in]`` weight (per token for an embedding table)."""

    def __str__(self) -> str:
        return "row"


@dataclass(frozen=True)
class PerToken:
    """One scale per token: per row of the last dimension of an activation (XTC's dynamic A8)."""

    def __str__(self) -> str:
        return "token"


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``size`` contiguous elements of the flattened tensor."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"group size {self.size!r} must be a positive integer, e.g. 'group:128'")

    def __str__(self) -> str:
        return f"group:{self.size}"


@dataclass(frozen=True)
class NumGroups:
    """``count`` equal contiguous groups of the flattened tensor (DeepSpeed's ``num_groups``; 64 in its FP16 run)."""

    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"group count {self.count!r} must be a positive integer, e.g. 'groups:64'")

    def __str__(self) -> str:
        return f"groups:{self.count}"


Granularity = PerTensor | PerRow | PerToken | PerGroup | NumGroups
GRANULARITY_SYNTAX = "'tensor', 'row', 'token', 'group:N' (N contiguous elements) or 'groups:N' (N equal groups)"


def parse_granularity(spec: str | Granularity) -> Granularity:
    """Parse ``'tensor' | 'row' | 'token' | 'group:N' | 'groups:N'`` (the config's spelling)."""
    if isinstance(spec, (PerTensor, PerRow, PerToken, PerGroup, NumGroups)):
        return spec
    simple = {"tensor": PerTensor(), "row": PerRow(), "token": PerToken()}
    if isinstance(spec, str):
        if spec in simple:
            return simple[spec]
        kind, _, number = spec.partition(":")
        if kind in ("group", "groups") and number.isdigit():
            return PerGroup(int(number)) if kind == "group" else NumGroups(int(number))
    raise ValueError(f"granularity {spec!r} is not understood: use {GRANULARITY_SYNTAX}")
