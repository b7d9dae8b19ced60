"""Interleaved timing: run every candidate once per round, many rounds; report medians and ratios of medians.

Candidates alternate within each round, so a slow spell of a shared machine hits both sides of a ratio alike;
the order rotates from round to round.
``summary`` also gives the quartiles of the per-round ratios (``a`` over ``b`` within the same round): their spread
says how much the machine's noise could move the headline ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rounds(candidates: dict[str, Callable[[], None]], rounds: int, warmup: int, rotate: bool,
            sample: Callable[[Callable[[], None]], float]) -> dict[str, list[float]]:
    """``warmup`` calls of every candidate, then per round one ``sample(fn)`` of each (order rotating if asked)."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)] if rotate else names:
            samples[name].append(sample(candidates[name]))
    return samples


def interleaved_samples(
    candidates: dict[str, Callable[[], None]], rounds: int, warmup: int = 2, rotate: bool = True
) -> dict[str, list[float]]:
    """Seconds of every call of each candidate, ``rounds`` calls each; candidates alternate within each round.

    ``rotate``: round ``r`` starts with candidate ``r mod n``, so that no candidate always runs first (or always
    right after the same other one) and inherits its caches, allocator state or the machine's rhythm.
    """
    return _rounds(candidates, rounds, warmup, rotate, _timed)


def block_samples(candidates: dict[str, Callable[[], None]], rounds: int, calls: int, warmup: int = 1
                  ) -> dict[str, list[float]]:
    """Per round, each candidate runs ``calls`` times in a row (order rotating per round); the first call of each
    block is discarded and the median of the rest is that round's sample: a server answering a stream of requests.

    ``interleaved_samples`` switches candidates on every call, so each call also pays the switch: thread pools that
    went to sleep while the other runtime worked (ONNX Runtime's spinning workers, OpenMP's), caches and allocator
    state left by the other model. At batch 1 that cost is of the order of the forward itself (on the AMX Xeon ONNX
    Runtime int8 took 29 ms alone, 33-57 ms interleaved with the engine and the other peers), so serving figures
    come from blocks.
    """
    if calls < 2:
        raise ValueError(f"block_samples needs calls >= 2 (one is discarded), got {calls}")
    return _rounds(candidates, rounds, warmup, True,
                   lambda fn: statistics.median([_timed(fn) for _ in range(calls)][1:]))


def interleaved(candidates: dict[str, Callable[[], None]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each candidate; candidates alternate in a fixed order within each round (the
    method of ``bench/quant_linear.py``, kept as its recorded figures were measured)."""
    samples = interleaved_samples(candidates, rounds, warmup, rotate=False)
    return {name: statistics.median(times) for name, times in samples.items()}


def summary(samples: dict[str, list[float]], a: str, b: str, digits: int = 3) -> dict:
    """Medians, ``ratio`` = median(a) / median(b), and the quartiles of the per-round ratios a/b."""
    medians = {name: statistics.median(times) for name, times in samples.items()}
    per_round = sorted(x / y for x, y in zip(samples[a], samples[b], strict=True))
    quartiles = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
    return {"medians": medians, "ratio": round(medians[a] / medians[b], digits),
            "round_ratio_quartiles": [round(q, digits) for q in quartiles]}
