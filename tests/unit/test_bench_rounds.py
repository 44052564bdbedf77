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


def test_a_floor_slower_than_what_it_bounds_never_passes() -> None:
    from bench.report import Target, floor_refusal

    fine = Target("warm ≤ 1.05 × floor", 1.02, 1.05, True, refused=floor_refusal(1.02, "floor"))
    noise = Target("warm ≤ 1.05 × floor", 0.97, 1.05, True, refused=floor_refusal(0.97, "floor"))
    wrong = Target("warm ≤ 1.05 × floor", 0.85, 1.05, True, refused=floor_refusal(0.85, "floor"))
    assert (fine.status, noise.status, wrong.status) == ("PASS", "PASS", "FAIL")
    assert "the floor is wrong" in wrong.line()


def test_make_bench_exits_1_when_a_target_fails(monkeypatch, tmp_path) -> None:
    import bench.run as run_module

    def fake_run(plan, sections, out, rtt_ms):
        return {"meta": {"seconds": 0.1}, "targets": [
            {"name": "x ≤ 1", "status": "FAIL"}, {"name": "y ≤ 1", "status": "PASS"}]}

    monkeypatch.setattr(run_module, "run", fake_run)
    monkeypatch.setattr(run_module, "chart", lambda results, path: False)
    monkeypatch.setattr(run_module, "render", lambda results: "")
    assert run_module.main(["--only", "core", "--out", str(tmp_path)]) == 1


def test_the_printed_targets_say_what_the_exit_code_says() -> None:
    from bench.report import Target, floor_refusal, render

    refused = Target("server-warm ≤ 1.05 × server-floor", 0.85, 1.05, True,
                     refused=floor_refusal(0.85, "server-floor"))
    printed = render({"targets": [refused.as_dict()]})
    assert "FAIL" in printed and "PASS" not in printed and "the floor is wrong" in printed
