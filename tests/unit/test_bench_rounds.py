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


def _served(warm: list[float], floor: list[float], *, floor_work: dict[str, int] | None = None
            ) -> dict:
    n = len(warm)
    return {"samples_ms": {"first_tool": {}, "client_last_event": {},
                           "last_event": {"server-warm": warm, "server-floor": floor}},
            "rounds": {"server-warm": list(range(n)), "server-floor": list(range(n))},
            "pool_hits": {"server-floor": {"runs": n, **(floor_work or {
                "sessions_opened": 0, "token_operations": 0})}}}


def test_paired_ratios_pair_by_round_with_a_bootstrap_range() -> None:
    from bench.server import paired_median, server_ranges

    # warm is 4 % slower in every round, while the machine's speed drifts by 2× over the run
    drift = [1 + i / 40 for i in range(40)]
    results = _served([104 * d for d in drift], [100 * d for d in drift])
    ranges = server_ranges(results, "server")
    p50 = ranges["warm/floor last event p50"]
    assert p50["ratio"] == pytest.approx(1.04) and p50["n"] == 40
    assert p50["low"] == pytest.approx(1.04) and p50["high"] == pytest.approx(1.04)
    noisy = paired_median([1.0, 1.1, 0.9, 1.2, 0.8] * 8)
    assert noisy is not None and noisy["low"] < noisy["ratio"] < noisy["high"]
    assert paired_median([]) is None


def test_p95_ratios_come_from_blocks_so_one_slow_round_moves_one_block() -> None:
    from bench.server import BLOCK, block_p95

    warm, floor = [100.0] * 40, [100.0] * 40
    warm[3] = 400.0  # one hiccup in the first block
    blocks = block_p95(_served(warm, floor), "last_event", "server-warm", "server-floor")
    assert blocks is not None and len(blocks["blocks"]) == 40 // BLOCK
    assert blocks["ratio"] == pytest.approx(1.0) and blocks["high"] > 1.5
    assert block_p95(_served(warm[:5], floor[:5]), "last_event", "server-warm",
                     "server-floor") is None


def test_a_floor_that_does_per_user_work_is_refused() -> None:
    from bench.report import _served_targets
    from bench.server import floor_work, server_ratios

    honest = _served([101.0] * 40, [100.0] * 40)
    assert floor_work(honest, "server") is None
    worked = _served([101.0] * 40, [100.0] * 40,
                     floor_work={"sessions_opened": 40, "token_operations": 0})
    why = floor_work(worked, "server")
    assert why is not None and "40 sessions opened" in why
    for results, expected in ((honest, "PASS"), (worked, "FAIL")):
        section = {**results, "ratios": server_ratios(results, "server"),
                   "floor_work": floor_work(results, "server")}
        p50 = next(t for t in _served_targets({"server": section}, "server")
                   if "p50" in t.name)
        assert p50.status == expected


def test_a_floor_is_refused_on_throughput_only_when_it_lost_every_burst_pair() -> None:
    from bench.report import _served_targets

    def target(pairs: list[tuple[float, float]]) -> str:
        ratios = [w / f for w, f in pairs]
        section = {"ratios": {"warm/floor runs per second, 50 users": sorted(ratios)[2]},
                   "ratio_ranges": {"warm/floor runs per second, 50 users": {
                       "ratio": sorted(ratios)[2], "low": min(ratios), "high": max(ratios)}},
                   "floor_work": None}
        return next(t for t in _served_targets({"server": section}, "server")
                    if "runs/s" in t.name).status

    # noisy bursts, the floor ahead in one pair: a fair comparison
    assert target([(21.6, 18.7), (19.8, 21.9), (20.1, 19.6), (22.0, 18.0), (20.1, 19.0)]) == "PASS"
    # the floor slower by more than 5 % in every pair: the floor is wrong
    assert target([(21.0, 18.0), (22.0, 19.0), (20.0, 18.5), (23.0, 19.0), (21.0, 19.5)]) == "FAIL"
