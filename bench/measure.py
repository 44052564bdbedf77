"""Timing: variants measured side by side, interleaved, with statistics that resist noise.

Each iteration runs every variant once, in an order shuffled per iteration
(seeded), so that drift on the machine (other processes, the servers' own
caches, garbage collection) spreads evenly over the variants instead of
landing on whichever ran last. Only `run` is timed; `before` (e.g. minting the
token a user arrives with) and `check` (did the variant really do the work?)
are not.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psutil


class Variant(Protocol):
    name: str

    async def setup(self, stack: contextlib.AsyncExitStack) -> None: ...

    async def before(self) -> Any: ...

    async def run(self, arg: Any) -> Any: ...

    def check(self, arg: Any, result: Any) -> None: ...


@dataclass(frozen=True)
class Stats:
    n: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            n=len(ms),
            median_ms=statistics.median(ms),
            p95_ms=percentile(ms, 95),
            mean_ms=statistics.fmean(ms),
            min_ms=ms[0],
            max_ms=ms[-1],
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


async def interleaved(
    variants: Sequence[Variant],
    *,
    iterations: int,
    warmup: int,
    seed: int = 7,
) -> dict[str, list[float]]:
    """Per-run seconds of each variant (warmup iterations discarded)."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for iteration in range(warmup + iterations):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            arg = await variant.before()
            started = time.perf_counter()
            result = await variant.run(arg)
            elapsed = time.perf_counter() - started
            variant.check(arg, result)
            if iteration >= warmup:
                samples[variant.name].append(elapsed)
    return samples


async def sequential(variant: Variant, *, runs: int, warmup: int = 0) -> list[float]:
    """Per-run seconds of one variant run `runs` times in a row."""
    samples: list[float] = []
    for i in range(warmup + runs):
        arg = await variant.before()
        started = time.perf_counter()
        result = await variant.run(arg)
        elapsed = time.perf_counter() - started
        variant.check(arg, result)
        if i >= warmup:
            samples.append(elapsed)
    return samples


def rss_mb() -> float:
    """This process's resident set size after a full collection, in MiB."""
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / 2**20
