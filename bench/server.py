"""Performance as the user sees it: runs through a real server, the MCP server 30 ms away.

The bench writes a bench-only `langgraph.json` to a temp dir (the product's
auth and HTTP app, the graphs of `bench.server_graphs`; `bench_config`) and
starts a server on it, with `MCP_SERVERS` naming the tickets server behind
`bench.netem` (`bench_env`). This module measures any such server (`Served`:
the URL the clients talk to, the processes whose CPU counts, the process that
executes the runs); `run_server` is the `server` section on `langgraph dev`,
`bench.engine` the `engine` section on Aegra. A client streams each run with
the SDK (`stream_mode=["messages", "updates"]`) and times it inside the run, from
the stream's own events: the first event (`metadata`, which both engines emit as
the run starts executing, after the queue) to the first tool result and to the
last event. The same instants counted from the request (queue included) are
printed beside, as information: `langgraph dev`'s queue polls every 0.5 s and
only takes runs created before its poll began, so they are quantized by ~0.5 s.
Variants, interleaved (order shuffled per round), named `<section>-<kind>`:

| kind              | graph                      | user                                |
|-------------------|----------------------------|-------------------------------------|
| `cold`            | `bench_onbehalf` (prewarm) | never seen before (new every run)   |
| `cold-no-prewarm` | `bench_onbehalf_noprewarm` | never seen before                   |
| `warm`            | `bench_onbehalf`           | the same user and token as last run |
| `floor`           | `bench_floor`              | tools of one session from start-up  |

`cold`, `warm` and `floor` run in every round (≥ 40 rounds: `bench.run`'s
`SERVER`, `ENGINE`), `cold-no-prewarm` in every `BARE_EVERY`th (it is for
reference). The judged ratios are paired: the median over rounds of a/b, with a
95 % bootstrap range (`BOOTSTRAP`); p95 ratios come from blocks of `BLOCK` rounds
(the p95 of each variant per block, their ratio, the median over blocks).

Then runs per second with 10 and 50 users at once (each user's runs one after
another), and the server processes' CPU seconds per run (psutil, children
included) for each throughput phase. One burst of 50 runs moves by ±0.1 between
bursts on 2 cores, so the 50-user warm/floor ratio is judged like the latency
ratios: `PAIRED_BURSTS` warm/floor bursts back to back (order alternating), the
median of the per-pair ratios.

The floor must do no per-user work: the executing process counts, per user and
inside their runs, the MCP sessions initialized and the token operations
(`bench.server_app`); a floor run that shows any is a wrong floor, and its
ratios are refused (`floor_work`).

Pool hits: after every run (untimed; around each burst), `GET /bench/pool` on the
process that executes the runs (`bench.server_app`) reads how often a run's
`SessionPool.acquire` there found its user's session (a hit) or opened one; per
variant, hits / runs is the share of runs that found their user's session warm
in the process that ran them (prewarms' own acquisitions are counted apart).
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

import httpx
import psutil
from tests.support.langgraph_server import run_langgraph_dev
from tests.support.tokens import mint

from bench.measure import Rounds, Stats, percentile
from bench.servers import Fleet
from bench.variants import TOKEN_TTL, cold_user
from bench.workload import PROMPT, TICKETS_CALLS, WorkloadError
from onbehalf.serve import write_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
N_JOBS = 50
"""Runs at once per server worker: enough for the 50-user level not to queue behind it."""
WARM_USER = "server-warm"
FLOOR_USER = "server-floor"
KINDS = ("cold", "cold-no-prewarm", "warm", "floor")
GRAPH_OF = {"cold": "bench_onbehalf", "cold-no-prewarm": "bench_onbehalf_noprewarm",
            "warm": "bench_onbehalf", "floor": "bench_floor"}
BENCH_GRAPHS = {name: f"{PROJECT_ROOT / 'bench/server_graphs.py'}:{name}"
                for name in ("bench_onbehalf", "bench_onbehalf_noprewarm", "bench_floor")}
BENCH_APP = f"{PROJECT_ROOT / 'bench/server_app.py'}:app"
"""The product's HTTP app plus the bench routes (profiling, pool counters)."""


def bench_config(workdir: Path) -> Path:
    """A `langgraph.json` for the bench graphs: the product's auth and HTTP app, not its graphs."""
    return write_config(workdir, PROJECT_ROOT, graphs=BENCH_GRAPHS, http_app=BENCH_APP)


def bench_env(fleet: Fleet, out_dir: Path) -> dict[str, str]:
    """What a bench server needs besides the test identity provider: the tickets server across
    the emulated network, the floor's session, the `bench` package, where a profile goes."""
    remote = fleet.url("tickets", remote=True)
    servers = {"servers": {"tickets": {"url": remote, "auth": {"type": "user_token"},
                                       "timeout_seconds": 10}}}
    return {"MCP_SERVERS": json.dumps(servers), "BENCH_FLOOR_URL": remote,
            "BENCH_FLOOR_TOKEN": mint(FLOOR_USER, ttl=TOKEN_TTL),
            "PYTHONPATH": str(PROJECT_ROOT), "BENCH_PROFILE_DIR": str(out_dir)}


@dataclass(frozen=True)
class Served:
    """A server under measurement."""

    name: str
    """The section: variants are named `<name>-<kind>`."""
    url: str
    """Where the clients send their requests."""
    pids: tuple[int, ...]
    """The processes whose CPU (children included) is counted."""
    executing_url: str
    """The process that executes the runs (its `GET /bench/pool`)."""
    mcp_pids: tuple[int, ...] = ()
    """The MCP server's process: its CPU per run is printed apart (per-user sessions cost
    the MCP server too; the floor's one shared session does not)."""

    def variant(self, kind: str) -> str:
        return f"{self.name}-{kind}"


@dataclass
class Timing:
    """Seconds from the request (client clock) to the run's first event, first tool result
    and last event; `first_tool`/`last_event` are the in-run figures, from the first event."""

    first_event_s: float
    first_tool_s: float
    last_event_s: float
    lost_events: bool = False
    """The stream ended with tool results missing although none failed (the run itself ran)."""

    @property
    def first_tool(self) -> float:
        return self.first_tool_s - self.first_event_s

    @property
    def last_event(self) -> float:
        return self.last_event_s - self.first_event_s


async def stream_run(client: Any, graph: str, user: str) -> Timing:
    """One threadless run, streamed; checks the tool results ran without error, as `user`.

    Fewer than the 3 results, none of them an error, is a stream that lost events, not a
    failed run: Aegra 0.11 replays a run's stored events and only then subscribes to its live
    ones, so under load an event published in between reaches neither (`lost_events`)."""
    started = time.perf_counter()
    began: float | None = None
    first: float | None = None
    results: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        None, graph, input={"messages": [{"role": "user", "content": PROMPT}]},
        stream_mode=["messages", "updates"],
    ):
        if began is None:
            began = time.perf_counter() - started
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
    if not results or len(results) > len(TICKETS_CALLS) or first is None or began is None:
        raise WorkloadError(f"expected {len(TICKETS_CALLS)} tool results, got {len(results)}")
    if any(m.get("status") == "error" for m in results):
        raise WorkloadError(f"a tool failed: {str(results)[:300]}")
    if user != FLOOR_USER:
        for result in results:
            content = result.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            if f'"as_user": "{user}"' not in text and f'\\"as_user\\": \\"{user}\\"' not in text:
                raise WorkloadError(f"tool ran as someone else than {user!r}: {text[:200]}")
    return Timing(began, first, last, lost_events=len(results) < len(TICKETS_CALLS))


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


async def pool_counters(url: str) -> dict[str, Any]:
    """`GET /bench/pool` of one process: its session pool's and prewarmer's counters."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get("/bench/pool")
        response.raise_for_status()
        return dict(response.json())


PER_RUN_WORK = ("sessions_opened", "token_operations")
"""What the executing process counts per user inside their runs (`bench.server_app`)."""


class PoolHits:
    """Per variant, in the executing process (counter deltas): pool hits and sessions opened,
    and the per-user work done inside the runs of the variant's users (`PER_RUN_WORK`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_variant: dict[str, dict[str, int]] = {}
        self._last: dict[str, Any] | None = None

    async def mark(self) -> None:
        """From now on."""
        self._last = await pool_counters(self.url)

    async def charge(self, variant: str, runs: int, users: Sequence[str]) -> dict[str, int]:
        """What happened since the last mark, charged to `runs` runs of `variant` by `users`."""
        now = await pool_counters(self.url)
        last = self._last or now
        delta = {"runs": runs, "hits": now["runs"]["hits"] - last["runs"]["hits"],
                 "opened": now["runs"]["opened"] - last["runs"]["opened"]}
        for what in PER_RUN_WORK:
            delta[what] = sum(_user_count(now, user, what) - _user_count(last, user, what)
                              for user in set(users))
        self._last = now
        total = self.by_variant.setdefault(variant, dict.fromkeys(delta, 0))
        for key, value in delta.items():
            total[key] += value
        return delta


def _user_count(counters: dict[str, Any], user: str, what: str) -> int:
    return int(counters.get("per_user", {}).get(user, {}).get(what, 0))


def floor_work(results: dict[str, Any], name: str) -> str | None:
    """Why the floor is not a floor: per-user work seen inside its measured runs; None if none."""
    counted = (results.get("pool_hits") or {}).get(f"{name}-floor")
    if counted is None:
        return "refused: the floor's per-run work was not counted"
    done = {what: counted.get(what, 0) for what in PER_RUN_WORK}
    if any(done.values()):
        return ("refused: the floor did per-user work in its measured runs ("
                + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in done.items()) + ")")
    return None


def _cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for p in [process, *process.children(recursive=True)]:
                with_times = p.cpu_times()
                total += with_times.user + with_times.system
        except psutil.Error:
            pass
    return total


RETRIES_AFTER_LOST_EVENTS = 2
"""A latency sample whose stream lost events is run again (its pairing must stay intact)."""
BARE_EVERY = 4
"""`cold-no-prewarm` runs in every 4th round only: it is the reference, not a target."""
BLOCK = 10
"""Rounds per block for the p95 ratios."""
BOOTSTRAP = 2000
"""Resamples of the paired ratios for their 95 % range."""
SAMPLES = ("first_tool", "last_event", "client_first_tool", "client_last_event", "run_start")
"""Per run: the in-run figures (judged) and, from the request, the client's (information)."""


def _samples_of(timing: Timing) -> dict[str, float]:
    return {"first_tool": timing.first_tool, "last_event": timing.last_event,
            "client_first_tool": timing.first_tool_s, "client_last_event": timing.last_event_s,
            "run_start": timing.first_event_s}


async def latency(served: Served, clients: Clients, rounds: Rounds, *,
                  seed: int = 11, kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    rng = random.Random(seed)
    warm = clients.client(clients.warm_token)
    floor = clients.client(clients.floor_token)
    variants = [served.variant(k) for k in kinds]
    samples: dict[str, dict[str, list[float]]] = {what: {v: [] for v in variants}
                                                   for what in SAMPLES}
    in_round: dict[str, list[int]] = {v: [] for v in variants}
    lost = dict.fromkeys(variants, 0)
    hits = PoolHits(served.executing_url)
    await hits.mark()
    began = time.monotonic()
    iteration = 0
    while iteration < rounds.warmup or rounds.more(iteration - rounds.warmup, began):
        measured = iteration - rounds.warmup
        order = [k for k in kinds if k != "cold-no-prewarm" or measured % BARE_EVERY == 0]
        rng.shuffle(order)
        for kind in order:
            variant = served.variant(kind)
            runs = 0
            users_of_round: list[str] = []
            while True:
                runs += 1
                if kind == "warm":
                    client, user = warm, WARM_USER
                elif kind == "floor":
                    client, user = floor, FLOOR_USER
                else:
                    user = cold_user()
                    client = clients.client(mint(user, ttl=TOKEN_TTL))
                users_of_round.append(user)
                timing = await stream_run(client, GRAPH_OF[kind], user)
                if not timing.lost_events:
                    break
                lost[variant] += 1
                if runs > RETRIES_AFTER_LOST_EVENTS:
                    raise WorkloadError(f"{runs} streams of {variant} in a row lost events")
            if measured >= 0:
                for what, value in _samples_of(timing).items():
                    samples[what][variant].append(value)
                in_round[variant].append(measured)
                await hits.charge(variant, runs, users_of_round)
            else:
                await hits.mark()
        iteration += 1
    return {
        "iterations": iteration - rounds.warmup, "warmup": rounds.warmup,
        **{what: {v: Stats.of(xs).__dict__ for v, xs in samples[what].items() if xs}
           for what in SAMPLES},
        "samples_ms": {what: {v: [round(x * 1000, 2) for x in xs]
                              for v, xs in samples[what].items()} for what in SAMPLES},
        "rounds": in_round,
        "pool_hits": hits.by_variant,
        "lost_event_streams": lost,
    }


PAIRED_BURSTS = 5
"""Warm/floor pairs of 50-user bursts the throughput ratio is the median of."""
_warm_tokens: dict[str, str] = {}
"""A warm user keeps one token for the whole bench: a new token is a new session."""


async def throughput(served: Served, clients: Clients, users: int, runs: int,
                     kind: str, *, warm_up: bool = True) -> dict[str, Any]:
    """`users` at once, each doing `runs` runs one after another."""
    graph = GRAPH_OF[kind]
    if kind == "warm":
        names = [f"{WARM_USER}-{users}-{i:03d}" for i in range(users)]
        tokens = {n: _warm_tokens.setdefault(n, mint(n, ttl=TOKEN_TTL)) for n in names}
        per_user = {n: clients.client(tokens[n]) for n in names}
        if warm_up:  # (already warm when the previous burst was theirs)
            await asyncio.gather(*(stream_run(per_user[n], graph, n) for n in names))
    elif kind == "floor":
        shared = clients.client(clients.floor_token)

    seen: list[str] = []

    async def one_user(i: int) -> list[Timing]:
        timings = []
        for _ in range(runs):
            if kind == "warm":
                name = names[i]
                client = per_user[name]
            elif kind == "floor":
                name, client = FLOOR_USER, shared
            else:
                name = cold_user()
                client = clients.client(mint(name, ttl=TOKEN_TTL))
            seen.append(name)
            timings.append(await stream_run(client, graph, name))
        return timings

    hits = PoolHits(served.executing_url)
    await hits.mark()
    cpu, mcp_cpu = _cpu_seconds(served.pids), _cpu_seconds(served.mcp_pids)
    started = time.perf_counter()
    per = await asyncio.gather(*(one_user(i) for i in range(users)))
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(served.pids) - cpu
    mcp_cpu = _cpu_seconds(served.mcp_pids) - mcp_cpu
    done = [t for timings in per for t in timings]
    pool = await hits.charge(served.variant(kind), len(done), seen)
    stats = Stats.of([t.last_event_s for t in done])
    return {"variant": served.variant(kind), "users": users, "runs": len(done),
            "wall_seconds": round(wall, 2), "runs_per_second": round(len(done) / wall, 2),
            "p50_ms": round(stats.median_ms, 1), "p95_ms": round(stats.p95_ms, 1),
            "cpu_seconds_per_run": round(cpu / len(done), 4),
            "mcp_server_cpu_seconds_per_run": round(mcp_cpu / len(done), 4),
            "pool_hits": pool["hits"], "pool_opened": pool["opened"],
            **{what: pool[what] for what in PER_RUN_WORK},
            "lost_event_streams": sum(t.lost_events for t in done)}


async def profile(served: Served, clients: Clients, users: int) -> dict[str, Any]:
    """pyinstrument inside the server while `users` users do a cold and a warm run each."""
    async with httpx.AsyncClient(base_url=clients.url, timeout=30) as http:
        (await http.post("/bench/profile/start")).raise_for_status()
        try:
            cold = await throughput(served, clients, users, 1, "cold")
            warm = await throughput(served, clients, users, 1, "warm")
        finally:
            response = await http.post("/bench/profile/stop")
        await clients.aclose()
    if response.status_code != 200:
        return {"error": f"profile stop answered {response.status_code}"}
    summary = response.json()
    summary["runs"] = cold["runs"] + warm["runs"] * 2  # the warm phase warms each user first
    return summary


async def drive(served: Served, rounds: Rounds, levels: Sequence[tuple[int, int]],
                profile_users: int, *, burst_kinds: Sequence[str] = ("cold", "warm", "floor"),
                paired_bursts: int = PAIRED_BURSTS) -> dict[str, Any]:
    """Latency rounds, throughput bursts of `burst_kinds` at each level (and `paired_bursts`
    warm/floor pairs at 50 users, the first pair being those bursts), a profile if asked."""
    clients = Clients(served.url)
    try:
        measured = await latency(served, clients, rounds)
        print(f"    {served.name}: {measured['iterations']} latency rounds done; bursts ...",
              flush=True)
        await clients.aclose()
        rng = random.Random(5)
        loads = []
        for users, runs in levels:
            order = list(burst_kinds)
            rng.shuffle(order)
            for kind in order:
                loads.append(await throughput(served, clients, users, runs, kind))
                await clients.aclose()
        measured["throughput"] = loads
        pairs = []
        warm, floor = served.variant("warm"), served.variant("floor")
        for users, runs in levels:
            if users != 50:
                continue
            first = {t["variant"]: t["runs_per_second"] for t in loads if t["users"] == users}
            pairs.append({"warm": first[warm], "floor": first[floor]})
            for burst in range(1, paired_bursts):
                rps = {}
                for kind in ["warm", "floor"][:: 1 if burst % 2 else -1]:
                    measured_burst = await throughput(served, clients, users, runs, kind,
                                                      warm_up=False)
                    rps[kind] = measured_burst["runs_per_second"]
                    await clients.aclose()
                pairs.append(rps)
        measured["throughput_pairs_50"] = pairs
        measured["processes"] = {"api": await pool_counters(served.url),
                                 "executing": await pool_counters(served.executing_url)}
        if profile_users:  # 0: no profile (the quick run)
            measured["profile"] = await profile(served, clients, profile_users)
        return measured
    finally:
        await clients.aclose()


def run_server(fleet: Fleet, rounds: Rounds, levels: Sequence[tuple[int, int]],
               out_dir: Path, *, profile_users: int = 20) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="onbehalf-bench-lg-"))
    bench_config(workdir)
    started = time.perf_counter()
    with run_langgraph_dev(bench_env(fleet, out_dir), workdir=workdir, n_jobs=N_JOBS) as server:
        startup = time.perf_counter() - started
        served = Served("server", server.url, (server.process.pid,), server.url,
                        mcp_pids=(fleet.servers["tickets"].process.pid,))
        results = asyncio.run(drive(served, rounds, levels, profile_users))
    results.update({"startup_seconds": round(startup, 1), "rtt_ms": fleet.rtt_ms,
                    "n_jobs_per_worker": N_JOBS})
    return judged(results, "server")


def _by_round(results: dict[str, Any], what: str, variant: str) -> dict[int, float]:
    xs = results["samples_ms"][what].get(variant) or []
    rounds = (results.get("rounds") or {}).get(variant) or list(range(len(xs)))
    return dict(zip(rounds, xs, strict=False))


def _pairs(results: dict[str, Any], what: str, a: str, b: str) -> list[tuple[int, float]]:
    """(round, a/b) for the rounds where both ran."""
    xs, ys = _by_round(results, what, a), _by_round(results, what, b)
    return [(r, xs[r] / ys[r]) for r in sorted(xs) if ys.get(r)]


def paired_median(ratios: Sequence[float], *, seed: int = 3) -> dict[str, float] | None:
    """The median of per-round ratios and the 95 % percentile-bootstrap range of it."""
    if not ratios:
        return None
    rng = random.Random(seed)
    n = len(ratios)
    medians = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(BOOTSTRAP))
    return {"ratio": statistics.median(ratios), "low": percentile(medians, 2.5),
            "high": percentile(medians, 97.5), "n": n}


def block_p95(results: dict[str, Any], what: str, a: str, b: str) -> dict[str, Any] | None:
    """p95(a)/p95(b) per block of `BLOCK` rounds, the median over blocks and their range
    (a last block of fewer than half a block joins the one before it)."""
    xs, ys = _by_round(results, what, a), _by_round(results, what, b)
    common = sorted(set(xs) & set(ys))
    if len(common) < BLOCK:
        return None
    blocks = [common[i:i + BLOCK] for i in range(0, len(common), BLOCK)]
    if len(blocks) > 1 and len(blocks[-1]) < BLOCK // 2:
        blocks[-2] += blocks.pop()
    per_block = [percentile(sorted(xs[r] for r in block), 95)
                 / percentile(sorted(ys[r] for r in block), 95) for block in blocks]
    return {"ratio": statistics.median(per_block), "low": min(per_block),
            "high": max(per_block), "blocks": [round(x, 3) for x in per_block]}


def judged(results: dict[str, Any], name: str) -> dict[str, Any]:
    """A measured section with what its targets are judged on: `ratios`, their
    `ratio_ranges` and `floor_work` (the bootstrap runs once)."""
    ranges = server_ranges(results, name)
    results.update(ratios=_ratios_of(ranges), ratio_ranges=ranges,
                   floor_work=floor_work(results, name))
    return results


def server_ratios(results: dict[str, Any], name: str) -> dict[str, float | None]:
    """The ratios the targets are judged on (in-run figures; paired medians, block p95s, the
    median of the burst pairs); their ranges are in `ratio_ranges` (`server_ranges`)."""
    return _ratios_of(server_ranges(results, name))


def _ratios_of(ranges: dict[str, Any]) -> dict[str, float | None]:
    return {k: (v["ratio"] if isinstance(v, dict) else v) for k, v in ranges.items()}


def server_ranges(results: dict[str, Any], name: str) -> dict[str, Any]:
    def v(kind: str) -> str:
        return f"{name}-{kind}"

    def paired(what: str, a: str, b: str) -> dict[str, float] | None:
        return paired_median([r for _, r in _pairs(results, what, v(a), v(b))])

    pairs = results.get("throughput_pairs_50") or []
    per_pair = [p["warm"] / p["floor"] for p in pairs if p.get("floor")]
    return {
        "cold/warm first tool (prewarm)": paired("first_tool", "cold", "warm"),
        "cold/warm first tool (no prewarm)": paired("first_tool", "cold-no-prewarm", "warm"),
        "warm/floor last event p50": paired("last_event", "warm", "floor"),
        "warm/floor last event p95": block_p95(results, "last_event", v("warm"), v("floor")),
        "warm/floor runs per second, 50 users": {
            "ratio": statistics.median(per_pair), "low": min(per_pair), "high": max(per_pair),
            "n": len(per_pair)} if per_pair else None,
        "warm/floor last event p50, from the request": paired("client_last_event", "warm",
                                                               "floor"),
    }
