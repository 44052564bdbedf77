"""Timing: variants measured side by side, interleaved, with statistics that resist noise.

Each iteration runs every variant once, in an order shuffled per iteration
(seeded), so that drift on the machine (other processes, the servers' own
caches, garbage collection) spreads evenly over the variants instead of
landing on whichever ran last. Only `run` is timed; `before` (e.g. minting the
token a user arrives with) and `check` (did the variant really do the work?)
are not.

Every phase has a time budget as well as an iteration count (`Rounds`): on a
slower or busier machine it stops early, after at least `minimum`
iterations, so `make bench` keeps to its few minutes; the number of samples
actually taken is in every statistic (`n`).
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
class Rounds:
    """At most `iterations` measured iterations after `warmup`; none started once
    `budget_seconds` (warm-up included) are spent and `minimum` are done."""

    iterations: int
    warmup: int
    budget_seconds: float | None = None
    minimum: int = 10

    def more(self, done: int, started: float) -> bool:
        """Whether to start measured iteration number `done` + 1."""
        if done >= self.iterations:
            return False
        if self.budget_seconds is None or done < min(self.minimum, self.iterations):
            return True
        return time.monotonic() - started < self.budget_seconds


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
    variants: Sequence[Variant], rounds: Rounds, *, seed: int = 7
) -> dict[str, list[float]]:
    """Per-run seconds of each variant (warmup iterations discarded)."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    began = time.monotonic()
    iteration = 0
    while iteration < rounds.warmup or rounds.more(iteration - rounds.warmup, began):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            arg = await variant.before()
            started = time.perf_counter()
            result = await variant.run(arg)
            elapsed = time.perf_counter() - started
            variant.check(arg, result)
            if iteration >= rounds.warmup:
                samples[variant.name].append(elapsed)
        iteration += 1
    return samples


async def sequential(variant: Variant, *, runs: int, warmup: int = 0,
                     budget_seconds: float | None = None) -> list[float]:
    """Per-run seconds of one variant run `runs` times in a row (fewer, but at least 10,
    when `budget_seconds` run out)."""
    rounds = Rounds(runs, warmup, budget_seconds)
    samples: list[float] = []
    began = time.monotonic()
    i = 0
    while i < warmup or rounds.more(i - warmup, began):
        arg = await variant.before()
        started = time.perf_counter()
        result = await variant.run(arg)
        elapsed = time.perf_counter() - started
        variant.check(arg, result)
        if i >= warmup:
            samples.append(elapsed)
        i += 1
    return samples


def rss_mb() -> float:
    """This process's resident set size after a full collection, in MiB."""
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / 2**20
