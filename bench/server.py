"""Performance as the user sees it: runs through a real `langgraph dev`, the MCP server 30 ms away.

The bench writes a bench-only `langgraph.json` to a temp dir (the product's
auth and HTTP app, the graphs of `bench.server_graphs`) and starts
`langgraph dev` on it, with `MCP_SERVERS` naming the tickets server behind
`bench.netem`. A client streams each run with the SDK
(`stream_mode=["messages", "updates"]`), timing the first tool result and
the last event. Variants, interleaved (order shuffled per iteration):

| variant                  | graph                      | user                                |
|--------------------------|----------------------------|-------------------------------------|
| `server-cold`            | `bench_onbehalf` (prewarm) | never seen before (new every run)   |
| `server-cold-no-prewarm` | `bench_onbehalf_noprewarm` | never seen before                   |
| `server-warm`            | `bench_onbehalf`           | the same user and token as last run |
| `server-floor`           | `bench_floor`              | tools of one session from start-up  |

Then runs per second with 10 and 50 users at once (each user's runs one after
another), and the server process's CPU seconds per run (psutil, children
included) for each throughput phase. One burst of 50 runs moves by ±0.1 between
bursts on 2 cores, so the 50-user warm/floor ratio is judged like the latency
ratios: `PAIRED_BURSTS` warm/floor bursts back to back (order alternating), the
median of the per-pair ratios.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from tests.support.langgraph_server import run_langgraph_dev
from tests.support.tokens import mint

from bench.measure import Rounds, Stats, percentile
from bench.servers import Fleet
from bench.variants import TOKEN_TTL, cold_user
from bench.workload import PROMPT, TICKETS_CALLS, WorkloadError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
N_JOBS = 50
"""Runs at once per server worker: enough for the 50-user level not to queue behind it."""
WARM_USER = "server-warm"
FLOOR_USER = "server-floor"
VARIANTS = ("server-cold", "server-cold-no-prewarm", "server-warm", "server-floor")
GRAPH_OF = {"server-cold": "bench_onbehalf", "server-cold-no-prewarm": "bench_onbehalf_noprewarm",
            "server-warm": "bench_onbehalf", "server-floor": "bench_floor"}


def write_config(workdir: Path) -> None:
    """A `langgraph.json` for the bench graphs: the product's auth and HTTP app, not its graphs."""
    product = json.loads((PROJECT_ROOT / "langgraph.json").read_text())
    http = dict(product["http"])
    http["app"] = str(PROJECT_ROOT / "bench/server_app.py") + ":app"  # + profiling routes
    graphs = {name: f"{PROJECT_ROOT / 'bench/server_graphs.py'}:{name}"
              for name in ("bench_onbehalf", "bench_onbehalf_noprewarm", "bench_floor")}
    config = {"dependencies": [str(PROJECT_ROOT)], "graphs": graphs,
              "auth": {**product["auth"], "path": f"{PROJECT_ROOT / 'src/auth.py'}:auth"},
              "http": http}
    (workdir / "langgraph.json").write_text(json.dumps(config, indent=1))


@dataclass
class Timing:
    first_tool_s: float
    last_event_s: float


async def stream_run(client: Any, graph: str, user: str) -> Timing:
    """One threadless run, streamed; checks the 3 tool results ran without error, as `user`."""
    started = time.perf_counter()
    first: float | None = None
    results: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        None, graph, input={"messages": [{"role": "user", "content": PROMPT}]},
        stream_mode=["messages", "updates"],
    ):
        if part.event == "error":
            raise WorkloadError(f"run failed: {str(part.data)[:300]}")
        if part.event.startswith("messages") and first is None:
            data = part.data
            message = data[0] if isinstance(data, list) and data else data
            if isinstance(message, dict) and message.get("type") == "tool":
                first = time.perf_counter() - started
        elif part.event.startswith("updates") and isinstance(part.data, dict):
            for update in part.data.values():
                messages = update.get("messages", []) if isinstance(update, dict) else []
                for message in messages:
                    if isinstance(message, dict) and message.get("type") == "tool":
                        first = first if first is not None else time.perf_counter() - started
                        results.append(message)
    last = time.perf_counter() - started
    if len(results) != len(TICKETS_CALLS) or first is None:
        raise WorkloadError(f"expected {len(TICKETS_CALLS)} tool results, got {len(results)}")
    if any(m.get("status") == "error" for m in results):
        raise WorkloadError(f"a tool failed: {str(results)[:300]}")
    if user != FLOOR_USER:
        content = results[0].get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        if f'"as_user": "{user}"' not in text and f'\\"as_user\\": \\"{user}\\"' not in text:
            raise WorkloadError(f"tool ran as someone else than {user!r}: {text[:200]}")
    return Timing(first, last)


class Clients:
    """One SDK client per token (the Authorization header is per client)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.warm_token = mint(WARM_USER, ttl=TOKEN_TTL)
        self.floor_token = mint(FLOOR_USER, ttl=TOKEN_TTL)
        self._open: list[Any] = []

    def client(self, token: str) -> Any:
        from langgraph_sdk import get_client

        client = get_client(url=self.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=120)
        self._open.append(client)
        return client

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._open), return_exceptions=True)
        self._open.clear()


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    try:
        process = psutil.Process(pid)
        for p in [process, *process.children(recursive=True)]:
            with_times = p.cpu_times()
            total += with_times.user + with_times.system
    except psutil.Error:
        pass
    return total


async def latency(clients: Clients, rounds: Rounds, *, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    warm = clients.client(clients.warm_token)
    floor = clients.client(clients.floor_token)
    first: dict[str, list[float]] = {v: [] for v in VARIANTS}
    last: dict[str, list[float]] = {v: [] for v in VARIANTS}
    began = time.monotonic()
    iteration = 0
    while iteration < rounds.warmup or rounds.more(iteration - rounds.warmup, began):
        order = list(VARIANTS)
        rng.shuffle(order)
        for variant in order:
            if variant == "server-warm":
                client, user = warm, WARM_USER
            elif variant == "server-floor":
                client, user = floor, FLOOR_USER
            else:
                user = cold_user()
                client = clients.client(mint(user, ttl=TOKEN_TTL))
            timing = await stream_run(client, GRAPH_OF[variant], user)
            if iteration >= rounds.warmup:
                first[variant].append(timing.first_tool_s)
                last[variant].append(timing.last_event_s)
        iteration += 1
    return {
        "iterations": iteration - rounds.warmup, "warmup": rounds.warmup,
        "first_tool": {v: Stats.of(s).__dict__ for v, s in first.items()},
        "last_event": {v: Stats.of(s).__dict__ for v, s in last.items()},
        "samples_ms": {
            "first_tool": {v: [round(x * 1000, 2) for x in s] for v, s in first.items()},
            "last_event": {v: [round(x * 1000, 2) for x in s] for v, s in last.items()},
        },
    }


PAIRED_BURSTS = 3
"""Warm/floor pairs of 50-user bursts the throughput ratio is the median of."""
_warm_tokens: dict[str, str] = {}
"""A warm user keeps one token for the whole bench: a new token is a new session."""


async def throughput(clients: Clients, pid: int, users: int, runs: int,
                     variant: str, *, warm_up: bool = True) -> dict[str, Any]:
    """`users` at once, each doing `runs` runs one after another."""
    graph = GRAPH_OF[variant]
    if variant == "server-warm":
        names = [f"{WARM_USER}-{users}-{i:03d}" for i in range(users)]
        tokens = {n: _warm_tokens.setdefault(n, mint(n, ttl=TOKEN_TTL)) for n in names}
        per_user = {n: clients.client(tokens[n]) for n in names}
        if warm_up:  # (already warm when the previous burst was theirs)
            await asyncio.gather(*(stream_run(per_user[n], graph, n) for n in names))
    elif variant == "server-floor":
        shared = clients.client(clients.floor_token)

    async def one_user(i: int) -> list[float]:
        seconds = []
        for _ in range(runs):
            if variant == "server-warm":
                name = names[i]
                client = per_user[name]
            elif variant == "server-floor":
                name, client = FLOOR_USER, shared
            else:
                name = cold_user()
                client = clients.client(mint(name, ttl=TOKEN_TTL))
            seconds.append((await stream_run(client, graph, name)).last_event_s)
        return seconds

    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    per = await asyncio.gather(*(one_user(i) for i in range(users)))
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    done = [s for seconds in per for s in seconds]
    stats = Stats.of(done)
    return {"variant": variant, "users": users, "runs": len(done),
            "wall_seconds": round(wall, 2), "runs_per_second": round(len(done) / wall, 2),
            "p50_ms": round(stats.median_ms, 1), "p95_ms": round(stats.p95_ms, 1),
            "cpu_seconds_per_run": round(cpu / len(done), 4)}


async def profile(clients: Clients, pid: int, users: int) -> dict[str, Any]:
    """pyinstrument inside the server while `users` users do a cold and a warm run each."""
    import httpx

    async with httpx.AsyncClient(base_url=clients.url, timeout=30) as http:
        (await http.post("/bench/profile/start")).raise_for_status()
        try:
            cold = await throughput(clients, pid, users, 1, "server-cold")
            warm = await throughput(clients, pid, users, 1, "server-warm")
        finally:
            response = await http.post("/bench/profile/stop")
        await clients.aclose()
    if response.status_code != 200:
        return {"error": f"profile stop answered {response.status_code}"}
    summary = response.json()
    summary["runs"] = cold["runs"] + warm["runs"] * 2  # the warm phase warms each user first
    return summary


async def _drive(url: str, pid: int, rounds: Rounds, levels: Sequence[tuple[int, int]],
                 profile_users: int) -> dict[str, Any]:
    clients = Clients(url)
    try:
        measured = await latency(clients, rounds)
        await clients.aclose()
        rng = random.Random(5)
        loads = []
        for users, runs in levels:
            order = ["server-cold", "server-warm", "server-floor"]
            rng.shuffle(order)
            for variant in order:
                loads.append(await throughput(clients, pid, users, runs, variant))
                await clients.aclose()
        measured["throughput"] = loads
        pairs = []
        for users, runs in levels:
            if users != 50:
                continue
            first = {t["variant"]: t["runs_per_second"] for t in loads if t["users"] == users}
            pairs.append({"warm": first["server-warm"], "floor": first["server-floor"]})
            for burst in range(1, PAIRED_BURSTS):
                order = ["server-warm", "server-floor"][:: 1 if burst % 2 else -1]
                rps = {}
                for variant in order:
                    measured_burst = await throughput(clients, pid, users, runs, variant,
                                                      warm_up=False)
                    rps[variant] = measured_burst["runs_per_second"]
                    await clients.aclose()
                pairs.append({"warm": rps["server-warm"], "floor": rps["server-floor"]})
        measured["throughput_pairs_50"] = pairs
        if profile_users:  # 0: no profile (the quick run)
            measured["profile"] = await profile(clients, pid, profile_users)
        return measured
    finally:
        await clients.aclose()


def run_server(fleet: Fleet, rounds: Rounds, levels: Sequence[tuple[int, int]],
               out_dir: Path, *, profile_users: int = 20) -> dict[str, Any]:
    remote = fleet.url("tickets", remote=True)
    servers = {"servers": {"tickets": {"url": remote, "auth": {"type": "user_token"},
                                       "timeout_seconds": 10}}}
    env = {"MCP_SERVERS": json.dumps(servers), "BENCH_FLOOR_URL": remote,
           "BENCH_FLOOR_TOKEN": mint(FLOOR_USER, ttl=TOKEN_TTL),
           "PYTHONPATH": str(PROJECT_ROOT), "BENCH_PROFILE_DIR": str(out_dir)}
    workdir = Path(tempfile.mkdtemp(prefix="onbehalf-bench-lg-"))
    write_config(workdir)
    started = time.perf_counter()
    with run_langgraph_dev(env, workdir=workdir, n_jobs=N_JOBS) as server:
        startup = time.perf_counter() - started
        results = asyncio.run(
            _drive(server.url, server.process.pid, rounds, levels, profile_users))
    results.update({"startup_seconds": round(startup, 1), "rtt_ms": fleet.rtt_ms,
                    "n_jobs_per_worker": N_JOBS})
    results["ratios"] = server_ratios(results)
    return results


def _paired(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    pairs = [x / y for x, y in zip(xs, ys, strict=False) if y]
    return statistics.median(pairs) if pairs else None


def server_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """The paired ratios the targets are judged on, and the p95 ratio (of the p95s)."""
    first = results["samples_ms"]["first_tool"]
    last = results["samples_ms"]["last_event"]

    def p95(xs: Sequence[float]) -> float:
        return percentile(sorted(xs), 95)

    pairs = results.get("throughput_pairs_50") or []
    per_pair = [p["warm"] / p["floor"] for p in pairs if p["floor"]]
    return {
        "cold/warm first tool (prewarm)": _paired(first["server-cold"], first["server-warm"]),
        "cold/warm first tool (no prewarm)": _paired(first["server-cold-no-prewarm"],
                                                     first["server-warm"]),
        "warm/floor last event p50": _paired(last["server-warm"], last["server-floor"]),
        "warm/floor last event p95": p95(last["server-warm"]) / p95(last["server-floor"]),
        "warm/floor runs per second, 50 users": statistics.median(per_pair) if per_pair
        else None,
    }
