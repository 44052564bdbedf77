"""`make bench` / `python -m bench.run [--quick] [--only core,users] [--rtt-ms 20] [--out DIR]`.

One process, real MCP servers on loopback (and, for the `network` section,
the same servers behind an emulated network: `bench.netem`), the
offline-capable scripted model.
Prints the tables and PASS/FAIL per target, writes `results.json`,
`latency.png` and `profile_onbehalf-warm.txt` to `--out` (default: `bench/`).
Exits 0 when every section ran, whatever the targets say (it is a report);
1 when a section itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import core, scaling
from bench.measure import Rounds
from bench.report import chart, render, targets
from bench.servers import Fleet, configured, environment, start_fleet

SECTIONS = ("users", "core", "ablation", "servers", "network", "tools", "profile", "load",
            "server", "engine")
"""In the order they run: `users` first, so that its RSS figures start from a fresh process."""
SERVERS = [f"s{i}" for i in range(1, 6)]
MANY = {n: f"many{n}" for n in scaling.TOOL_COUNTS}
HERE = Path(__file__).resolve().parent


DEFAULT_RTT_MS = 30.0
"""The `network` section's round-trip time: an agent in a cloud region calling a hosted
MCP server in the same part of the world sees ~10-80 ms; 30 ms is a middle, not a far,
case (docs/performance.md has the ratio from 0 to 30 ms)."""

# Rounds are frozen: safe as shared defaults
CORE = Rounds(120, 10, budget_seconds=34)
ABLATION = Rounds(50, 5, budget_seconds=8)
SCALING_SERVERS = Rounds(25, 1, budget_seconds=12, minimum=5)
NETWORK = Rounds(20, 2, budget_seconds=15, minimum=8)
SCALING_TOOLS = Rounds(20, 1, budget_seconds=10, minimum=5)
SERVER = Rounds(40, 1)
ENGINE = Rounds(40, 1)
"""At least 40 paired rounds per comparison: no time budget cuts them short."""
QUICK_ENGINE = Rounds(2, 1)
QUICK_SKIPS_ENGINE = ("--quick skips it (Aegra's start-up alone is ~10 s of the 1 min budget); "
                      "`--quick --only engine` runs a minimal one")


@dataclass(frozen=True)
class Plan:
    """Iterations per phase, most with a time budget, so that a slow hour of this 2-core
    machine does not stretch them; the `users`, `load`, `server` and `engine` sections are
    mostly fixed work (two `langgraph dev` and one Aegra start-ups among it). The `server`
    and `engine` latency rounds have no budget: at least 40 paired rounds per comparison,
    and a run through `langgraph dev` waits 0.5–1.0 s in its queue, so that section alone
    takes ~3 min (docs/performance.md, "Budget")."""

    core: Rounds = CORE
    ablation: Rounds = ABLATION
    servers: Rounds = SCALING_SERVERS
    network: Rounds = NETWORK
    tools: Rounds = SCALING_TOOLS
    profile_runs: int = 150
    profile_budget_seconds: float = 6.0
    user_sizes: tuple[int, ...] = (1, 100, 1000)
    user_rounds: dict[int, int] = field(default_factory=lambda: {1: 30, 100: 2, 1000: 1})
    load_levels: tuple[tuple[int, int], ...] = ((10, 2), (50, 1))
    server: Rounds = SERVER
    server_levels: tuple[tuple[int, int], ...] = ((10, 2), (50, 1))
    server_profile_users: int = 20
    engine: Rounds | None = ENGINE
    """None: the section prints that it did not run (`--quick` without `--only engine`)."""
    engine_levels: tuple[tuple[int, int], ...] = ((50, 1),)
    engine_paired_bursts: int = 5

    @classmethod
    def quick(cls, *, engine: bool = False) -> Plan:
        return cls(core=Rounds(10, 2), ablation=Rounds(6, 1), servers=Rounds(4, 1),
                   network=Rounds(2, 1), tools=Rounds(3, 1), profile_runs=30,
                   user_sizes=(1, 10, 40), user_rounds={1: 10, 10: 2, 40: 1},
                   load_levels=((5, 1),), server=Rounds(2, 1),
                   server_levels=((5, 1),), server_profile_users=0,
                   engine=QUICK_ENGINE if engine else None, engine_levels=((5, 1),),
                   engine_paired_bursts=1)


def _versions() -> dict[str, str]:
    names = ("langgraph", "langchain", "langchain-core", "langchain-mcp-adapters", "mcp",
             "httpx", "langgraph-api", "pyinstrument")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _section(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    started = time.monotonic()
    print(f"==> {name} ...", flush=True)
    try:
        results[name] = fn()
    except Exception:
        results.setdefault("errors", {})[name] = traceback.format_exc()
        print(f"!!! section {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
    print(f"    {name}: {time.monotonic() - started:.1f} s", flush=True)


def run(plan: Plan, sections: Sequence[str], out: Path,
        rtt_ms: float = DEFAULT_RTT_MS) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "plan": asdict(plan),
            "sections": list(sections),
            "rtt_ms": rtt_ms,
        }
    }
    wants_servers = "servers" in sections or "network" in sections
    tickets = ["tickets"] + (SERVERS if wants_servers else [])
    many = {name: n for n, name in MANY.items()} if "tools" in sections else {}
    started = time.monotonic()
    network = rtt_ms if {"network", "server", "engine"} & set(sections) else None
    with start_fleet(tickets, many, rtt_ms=network) as fleet, configured(fleet):
        _run_sections(results, plan, sections, fleet, out)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = [t.as_dict() for t in targets(results)]
    return results


def _run_sections(results: dict[str, Any], plan: Plan, sections: Sequence[str], fleet: Fleet,
                  out: Path) -> None:
    if "users" in sections:
        _section(results, "users", lambda: asyncio.run(
            scaling.run_users(fleet, sizes=plan.user_sizes, rounds=plan.user_rounds)))
    if "core" in sections:
        _section(results, "core", lambda: asyncio.run(core.run_core(fleet, plan.core)))
    if "ablation" in sections:

        def pool_off() -> Any:
            with environment(MCP_SESSION_IDLE_SECONDS="0", MCP_TOOLS_CACHE_SECONDS="0"):
                return asyncio.run(core.run_ablation_pool_off(fleet, plan.ablation))

        _section(results, "ablation_pool_off", pool_off)
        _section(results, "ablation_defaults", lambda: asyncio.run(
            core.run_ablation_defaults(fleet, plan.ablation)))
    if "servers" in sections:
        _section(results, "servers", lambda: asyncio.run(
            scaling.run_servers(fleet, SERVERS, plan.servers)))
    if "network" in sections:

        def across_network() -> Any:
            with environment(MCP_SERVERS=fleet.servers_json(remote=True)):
                return asyncio.run(scaling.run_servers(fleet, SERVERS, plan.network,
                                                       remote=True))

        _section(results, "network", across_network)
    if "tools" in sections:
        _section(results, "tools", lambda: asyncio.run(
            scaling.run_tools(fleet, MANY, plan.tools)))
    if "profile" in sections:
        _section(results, "profile", lambda: asyncio.run(
            _profile(fleet, plan.profile_runs, plan.profile_budget_seconds, out)))
    if "load" in sections:
        from bench.load import run_load

        _section(results, "load", lambda: run_load(fleet, plan.load_levels))
    if "server" in sections:
        from bench.server import run_server

        _section(results, "server", lambda: run_server(fleet, plan.server, plan.server_levels, out,
                                               profile_users=plan.server_profile_users))
    if "engine" in sections:
        from bench.engine import run_engine

        def on_aegra() -> Any:
            if plan.engine is None:
                print(f"    engine section did not run: {QUICK_SKIPS_ENGINE}", flush=True)
                return {"skipped": QUICK_SKIPS_ENGINE}
            return run_engine(fleet, plan.engine, plan.engine_levels,
                              paired_bursts=plan.engine_paired_bursts)

        _section(results, "engine", on_aegra)


async def _profile(fleet: Fleet, runs: int, budget: float | None, out: Path) -> dict[str, Any]:
    import contextlib

    from bench.measure import sequential
    from bench.profiling import profile_runs
    from bench.variants import OnBehalf, onbehalf_graph

    warm = OnBehalf(onbehalf_graph(["tickets"]), warm=True)
    async with contextlib.AsyncExitStack() as stack:
        await warm.setup(stack)
        await sequential(warm, runs=10)
        profile = await profile_runs(warm, runs=runs, budget_seconds=budget, out_dir=out)
        await core.close_pool()
    return profile


def _load() -> str:
    """The load average (1, 5, 15 minutes), for a reader to judge the noise of a run."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (~30 s): few iterations, small sizes")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated sections to run (default: all of {SECTIONS}; "
                        "--quick skips `engine` unless named here)")
    parser.add_argument("--rtt-ms", type=float, default=DEFAULT_RTT_MS,
                        help="round-trip time of the emulated network (section `network`)")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where results.json, latency.png and the profile go")
    args = parser.parse_args(argv)
    only = args.only if args.only is not None else ",".join(SECTIONS)
    sections = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    plan = Plan.quick(engine=args.only is not None) if args.quick else Plan()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")
    load_at_start = _load()
    print(f"load average at the start: {load_at_start}", flush=True)
    results = run(plan, sections, args.out, rtt_ms=args.rtt_ms)
    results["meta"]["load_average"] = {"start": load_at_start, "end": _load()}
    results["meta"]["quick"] = args.quick
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    drawn = chart(results, args.out / "latency.png")
    print()
    print(render(results))
    print()
    picture = args.out / "latency.png" if drawn else "none (pip install -e '.[bench]')"
    print(f"results: {args.out / 'results.json'}   chart: {picture}   "
          f"({results['meta']['seconds']} s)")
    load = results["meta"]["load_average"]
    print(f"load average at the start: {load['start']}, at the end: {load['end']} "
          "(1, 5, 15 min; on 2 cores, above 2 the figures are noisy)")
    if results.get("errors"):
        print(f"sections that failed: {', '.join(results['errors'])}", file=sys.stderr)
        return 1
    failed = [t["name"] for t in results["targets"] if t["status"] == "FAIL"]
    if failed:
        print(f"{len(failed)} target(s) failed: {'; '.join(failed)}", file=sys.stderr)
        # a --quick run is a smoke run: too few rounds to judge a target on
        return 0 if args.quick else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
