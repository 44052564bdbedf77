"""The benchmark's phases stop at their time budget, never below their minimum."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from bench.measure import Rounds, interleaved, sequential

pytestmark = pytest.mark.anyio


@dataclass
class Counting:
    name: str = "counting"
    runs: list[int] = field(default_factory=list)

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        return None

    async def before(self) -> None:
        return None

    async def run(self, arg: None) -> int:
        self.runs.append(len(self.runs))
        return len(self.runs)

    def check(self, arg: None, result: int) -> None:
        assert result == len(self.runs)


async def test_without_a_budget_every_iteration_runs() -> None:
    variant = Counting()
    samples = await interleaved([variant], Rounds(7, 2))
    assert len(samples["counting"]) == 7 and len(variant.runs) == 9


async def test_a_spent_budget_stops_after_the_minimum() -> None:
    variant = Counting()
    samples = await interleaved([variant], Rounds(50, 2, budget_seconds=0.0, minimum=4))
    assert len(samples["counting"]) == 4 and len(variant.runs) == 6


async def test_the_minimum_never_exceeds_the_planned_iterations() -> None:
    samples = await interleaved([Counting()], Rounds(3, 0, budget_seconds=0.0, minimum=10))
    assert len(samples["counting"]) == 3


async def test_sequential_honours_the_budget_too() -> None:
    assert len(await sequential(Counting(), runs=100, budget_seconds=0.0)) == 10
    assert len(await sequential(Counting(), runs=5, warmup=1)) == 5
