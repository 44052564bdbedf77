"""Turning results into what a person reads: tables, PASS/FAIL per target, and the chart."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import CORE_VARIANTS


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    limit: float
    at_most: bool
    unit: str = "×"
    refused: str | None = None
    """Why this figure cannot PASS whatever its value (a floor slower than what it bounds)."""

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "SKIPPED"
        if self.refused is not None:
            return "FAIL"
        ok = self.value <= self.limit if self.at_most else self.value >= self.limit
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        op = "≤" if self.at_most else "≥"
        shown = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        target = f"(target {op} {self.limit:g}{self.unit})"
        why = f"  {self.refused}" if self.refused and self.status == "FAIL" else ""
        return f"{self.status:7s} {self.name:44s} {shown:>10s}  {target}{why}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit,
                "at_most": self.at_most, "unit": self.unit, "status": self.status,
                "refused": self.refused}


FLOOR_NOISE = 0.05
"""How much faster than its floor a variant may measure before the floor is judged wrong: a
floor does strictly less work than what it bounds, so it can only lose by noise."""


def floor_refusal(ratio: float | None, floor: str) -> str | None:
    """Why a ratio over a floor cannot PASS: the floor measured slower than the variant."""
    if ratio is None or math.isnan(ratio) or ratio >= 1 - FLOOR_NOISE:
        return None
    return (f"refused: {floor} is slower than what it bounds by more than the noise band "
            f"({FLOOR_NOISE:.0%}): the floor is wrong, not the variant fast")


PAIRS = (("onbehalf-warm", "agent-floor"), ("onbehalf-cold", "agent-floor"),
         ("seed", "onbehalf-warm"), ("static", "onbehalf-warm"))


def _median(results: dict[str, Any], section: str, name: str) -> float | None:
    try:
        return float(results[section]["stats"][name]["median_ms"])
    except (KeyError, TypeError):
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def paired_ratio(results: dict[str, Any], section: str, a: str, b: str) -> float | None:
    """Median over iterations of a_i / b_i.

    The phases interleave their variants, so a_i and b_i ran back to back in iteration i:
    their ratio cancels how fast the machine happened to be during that iteration, which
    on a shared machine drifts by tens of percent within a run. The targets are judged on
    this; the ratio of the medians is printed beside it."""
    try:
        xs = results[section]["samples_ms"][a]
        ys = results[section]["samples_ms"][b]
    except (KeyError, TypeError):
        return None
    pairs = [x / y for x, y in zip(xs, ys, strict=False) if y]
    return statistics.median(pairs) if pairs else None


def core_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    m = {v: _median(results, "core", v) for v in CORE_VARIANTS}
    return {
        "onbehalf-warm / agent-floor": _ratio(m["onbehalf-warm"], m["agent-floor"]),
        "onbehalf-cold / agent-floor": _ratio(m["onbehalf-cold"], m["agent-floor"]),
        "seed / onbehalf-warm": _ratio(m["seed"], m["onbehalf-warm"]),
        "static / onbehalf-warm": _ratio(m["static"], m["onbehalf-warm"]),
        "agent-floor / floor": _ratio(m["agent-floor"], m["floor"]),
        "onbehalf-warm / floor": _ratio(m["onbehalf-warm"], m["floor"]),
    }


def targets(results: dict[str, Any]) -> list[Target]:
    def core(a: str, b: str) -> float | None:
        return paired_ratio(results, "core", a, b)

    five = paired_ratio(results, "network", "cold discovery, 5 servers",
                        "cold discovery, 1 servers")
    rtt = results.get("network", {}).get("rtt_ms") or results["meta"].get("rtt_ms")
    rss_delta: float | None = None
    steps = {s["users"]: s for s in results.get("users", {}).get("steps", [])}
    if 100 in steps and 1000 in steps:
        rss_delta = steps[1000]["rss_mb"] - steps[100]["rss_mb"]
    crossed: float | None = None
    if "load" in results:
        levels = results["load"]["levels"]
        crossed = float(sum(level["cross_user_answers"] + level["unattributed_answers"]
                            for level in levels if level["graph"] == "assistant"))
    return [
        # issue "The last 10 %" tightened these from 1.15 and 1.8
        Target("onbehalf-warm ≤ 1.05 × agent-floor", core("onbehalf-warm", "agent-floor"), 1.05,
               True),
        Target("onbehalf-cold ≤ 1.5 × agent-floor", core("onbehalf-cold", "agent-floor"), 1.5,
               True),
        Target("seed / onbehalf-warm ≥ 5", core("seed", "onbehalf-warm"), 5, False),
        Target("static / onbehalf-warm ≥ 3", core("static", "onbehalf-warm"), 3, False),
        Target("cold discovery, 5 servers ≤ 1.5 × 1"
               + (f" ({rtt:g} ms RTT)" if rtt is not None else ""), five, 1.5, True),
        Target("RSS(1,000 users) − RSS(100 users) ≤ 50 MB", rss_delta, 50, True, " MB"),
        Target("load run: cross-user answers = 0", crossed, 0, True, ""),
        *_served_targets(results, "server"),
        *_served_targets(results, "engine"),
    ]


def _served_targets(results: dict[str, Any], name: str) -> list[Target]:
    """The targets of a section measured through a server (`bench.server`): `server`, `engine`."""
    section = results.get(name, {})
    ratios = section.get("ratios", {})
    p50 = ratios.get("warm/floor last event p50")
    p95 = ratios.get("warm/floor last event p95")
    rps = ratios.get("warm/floor runs per second, 50 users")
    worked = section.get("floor_work") if "ratios" in section else None
    return [
        Target(f"{name}-cold ≤ 1.10 × {name}-warm, first tool result",
               ratios.get("cold/warm first tool (prewarm)"), 1.10, True),
        Target(f"{name}-warm ≤ 1.05 × {name}-floor, last event p50", p50, 1.05, True,
               refused=worked or floor_refusal(p50, f"{name}-floor")),
        Target(f"{name}-warm ≤ 1.05 × {name}-floor, last event p95", p95, 1.05, True,
               refused=worked or floor_refusal(p95, f"{name}-floor")),
        Target(f"{name}-warm ≥ 0.95 × {name}-floor, runs/s at 50 users", rps, 0.95, False,
               refused=worked or _floor_lost_every_burst(section, name)),
    ]


def _floor_lost_every_burst(section: dict[str, Any], name: str) -> str | None:
    """Bursts move by ±15 % from one to the next, so one pair's ratio says nothing about the
    floor; a floor slower than the variant by more than the noise band in every pair does."""
    pairs = (section.get("ratio_ranges") or {}).get("warm/floor runs per second, 50 users")
    if not isinstance(pairs, dict):
        return None
    return floor_refusal(1 / pairs["low"] if pairs["low"] else None, f"{name}-floor")


def _served_section(sv: dict[str, Any], name: str, title: str, cpu: str) -> list[str]:
    """A section measured through a server (`bench.server`); `cpu`: whose CPU is counted."""
    out = [f"## {title}, tickets server {sv['rtt_ms']} ms away "
           f"({sv['iterations']} interleaved rounds, {sv['warmup']} warm-up; "
           f"{sv['n_jobs_per_worker']} jobs per worker, startup {sv['startup_seconds']} s)",
           "in the run: from its first stream event (judged); from the request: the client's "
           "clock, the queue included (information)"]
    rows = []
    for variant, first in sv["first_tool"].items():
        last = sv["last_event"][variant]
        client_first = sv.get("client_first_tool", {}).get(variant, {})
        client_last = sv.get("client_last_event", {}).get(variant, {})
        start = sv.get("run_start", {}).get(variant, {})
        rows.append([variant, str(first["n"]), f"{first['median_ms']:.1f}",
                     f"{first['p95_ms']:.1f}", f"{last['median_ms']:.1f}",
                     f"{last['p95_ms']:.1f}", _ms(start), _ms(client_first), _ms(client_last)])
    out.append(_table(["variant", "runs", "first tool p50 ms", "p95", "last event p50 ms", "p95",
                       "request→run p50", "→first tool", "→last event"], rows))
    out.append("")
    out.append(_table(
        ["variant", "users", "runs", "runs/s", "p50 ms", "p95 ms", f"{cpu} CPU s/run",
         "MCP server CPU s/run", "sessions opened", "token ops"],
        [[t["variant"], str(t["users"]), str(t["runs"]), f"{t['runs_per_second']:.1f}",
          str(t["p50_ms"]), str(t["p95_ms"]), f"{t['cpu_seconds_per_run']:.3f}",
          f"{t.get('mcp_server_cpu_seconds_per_run', float('nan')):.3f}",
          str(t.get("sessions_opened", "?")), str(t.get("token_operations", "?"))]
         for t in sv.get("throughput", [])]))
    pairs = sv.get("throughput_pairs_50") or []
    if pairs:
        out.append("runs/s at 50 users, warm/floor burst pairs (the ratio is their median): "
                   + ", ".join(f"{p['warm']:.1f}/{p['floor']:.1f}" for p in pairs))
    ranges = sv.get("ratio_ranges") or {}
    out.append("ratios (paired medians over rounds [95 % bootstrap range]; p95: median over "
               f"blocks of rounds [lowest–highest block]; runs/s: median of {len(pairs)} "
               "burst pairs [range]):")
    for key, value in sv["ratios"].items():
        if value is None:
            continue
        r = ranges.get(key)
        extra = f" [{r['low']:.2f}–{r['high']:.2f}]" if isinstance(r, dict) else ""
        out.append(f"  {key} = {value:.3f}{extra}")
    work = (sv.get("pool_hits") or {}).get(f"{name}-floor")
    if work is not None:
        out.append(f"the floor's per-user work in its {work['runs']} measured latency runs: "
                   f"{work.get('sessions_opened', '?')} MCP sessions opened, "
                   f"{work.get('token_operations', '?')} token operations"
                   + (f" — {sv['floor_work']}" if sv.get("floor_work") else " (a floor)"))
    out += _pool_lines(sv, name)
    lost = sum((sv.get("lost_event_streams") or {}).values())
    bursts = sum(t.get("lost_event_streams", 0) for t in sv.get("throughput", []))
    out.append(f"streams that ended with tool results missing, none failed (the run ran): "
               f"{lost} in the latency rounds (run again), {bursts} in the throughput bursts")
    out.append("")
    prof = sv.get("profile")
    if prof and "edge" in prof:
        out.append(f"server process under pyinstrument, {prof['runs']} runs, "
                   f"{prof['profiled_seconds']} s sampled; our server-edge functions (inclusive):")
        out.append(_table(["function", "ms per run", "share"],
                          [[e["name"], f"{e['seconds'] * 1000 / prof['runs']:.2f}",
                            f"{e['share'] * 100:.2f}%"] for e in prof["edge"]]))
        out.append("")
    return out


def _ms(stats: dict[str, Any]) -> str:
    return f"{stats['median_ms']:.0f}" if stats else "-"


def _pool_lines(sv: dict[str, Any], name: str) -> list[str]:
    """Runs that found their user's session warm where they ran, and where prewarm ran."""
    hits = sv.get("pool_hits")
    if not hits:
        return []

    def share(hits: int, runs: int) -> str:
        return f"{hits}/{runs}" + (f" ({hits / runs:.0%})" if runs else "")

    out = ["runs that found their user's session warm in the process that executed them "
           "(pool hits / runs, its SessionPool counters): " + ", ".join(
               f"{variant} {share(c['hits'], c['runs'])}" for variant, c in hits.items()
               if not variant.endswith("-floor"))]
    bursts = [t for t in sv.get("throughput", []) if not t["variant"].endswith("-floor")]
    if bursts:
        out.append("  in the throughput bursts: " + ", ".join(
            f"{t['variant']} × {t['users']} users {share(t['pool_hits'], t['runs'])}"
            for t in bursts))
    procs = sv.get("processes", {})
    api, executing = procs.get("api"), procs.get("executing")
    if api and executing:
        def prewarms(counters: dict[str, Any]) -> str:
            p, runs, other = counters["prewarm"], counters["runs"], counters["outside_runs"]
            return (f"asked for {p['asked']} prewarms, scheduled {p['scheduled']} (graphs it can "
                    f"prewarm: {', '.join(p['graphs_known']) or 'none'}), {p['started']} "
                    f"started, {p['finished']} finished; sessions opened by runs "
                    f"{runs['opened']} (hits {runs['hits']}), outside runs {other['opened']} "
                    f"(hits {other['hits']})")

        if api["pid"] == executing["pid"]:
            out.append(f"prewarm: one process receives and executes the runs: {prewarms(api)}")
        else:
            out.append(f"prewarm: the process that receives the requests (API only): "
                       f"{prewarms(api)}; the process that executes them: {prewarms(executing)}")
    first = sv.get("first_tool", {})
    cold, bare, warm = (first.get(f"{name}-{k}", {}).get("median_ms")
                        for k in ("cold", "cold-no-prewarm", "warm"))
    ratios = sv.get("ratios", {})
    with_, without = (ratios.get(f"cold/warm first tool ({k})") for k in ("prewarm", "no prewarm"))
    if None not in (cold, bare, warm, with_, without):
        out.append(f"prewarm's effect on a new user's first tool result (p50): with {cold:.0f} ms "
                   f"({with_:.2f} × warm), without {bare:.0f} ms ({without:.2f} × warm); "
                   f"warm {warm:.0f} ms")
    window = sv.get("run_start", {}).get(f"{name}-warm", {}).get("median_ms")
    if None not in (window, bare, warm):
        out.append(f"prewarm's window: a run starts {window:.0f} ms (p50) after its request "
                   f"reached the server; a new user's sessions cost {bare - warm:.0f} ms inside "
                   f"the run (cold-no-prewarm − warm, first tool p50): a prewarm started at the "
                   f"request can hide at most {min(window, bare - warm):.0f} ms of it")
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)] if rows \
        else [len(h) for h in headers]
    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _stats_rows(stats: dict[str, dict[str, Any]], base: str | None,
                extra: Callable[[str, dict[str, Any]], list[str]] | None = None) -> list[list[str]]:
    base_ms = stats[base]["median_ms"] if base and base in stats else None
    rows = []
    for name, s in stats.items():
        row = [name, f"{s['median_ms']:.1f}", f"{s['p95_ms']:.1f}"]
        if base_ms:
            row.append(f"{s['median_ms'] / base_ms:.2f}")
        if extra:
            row += extra(name, s)
        rows.append(row)
    return rows


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    if "core" in results:
        core = results["core"]
        out.append(f"## Per run: discover tools + 3 tool calls ({core['iterations']} interleaved "
                   f"iterations, {core['warmup']} warm-up)")
        stats = {k: core["stats"][k] for k in CORE_VARIANTS if k in core["stats"]}
        floor = stats["floor"]["median_ms"]
        out.append(_table(
            ["variant", "median ms", "p95 ms", "× agent-floor", "× floor"],
            _stats_rows(stats, "agent-floor",
                        lambda n, s: [f"{s['median_ms'] / floor:.2f}"]),
        ))
        out.append("")
        out.append("ratios of the medians: " + ", ".join(
            f"{k} = {v:.2f}" for k, v in core_ratios(results).items() if v is not None))
        out.append("paired (median over iterations of the ratio; the targets use these): "
                   + ", ".join(f"{a} / {b} = {v:.2f}" for a, b in PAIRS
                               if (v := paired_ratio(results, "core", a, b)) is not None))
        out.append(f"pool at the end: {core['pool']}")
        out.append("")
    ablations = (
        ("ablation_pool_off", "Optimisations off: session pool and tool-list cache"),
        ("ablation_defaults", "Optimisations off: shared transport; cost of any middleware"),
    )
    for key, title in ablations:
        if key in results:
            out.append(f"## {title}")
            out.append(_table(["variant", "median ms", "p95 ms", "× agent-floor"],
                              _stats_rows(results[key], "agent-floor")))
            out.append("")
    rtt = results.get("network", {}).get("rtt_ms")
    for key, title in (("servers", "Servers per run, loopback (cold discovery = a new user's run, "
                                   "no call)"),
                       ("network", f"Servers per run across a {rtt} ms RTT network (bench.netem)"),
                       ("tools", "Tools per server")):
        if key in results:
            out.append(f"## {title}")
            out.append(_table(["variant", "median ms", "p95 ms"],
                              _stats_rows(results[key]["stats"], None)))
            out.append("")
    for key, where in (("servers", "loopback"), ("network", f"{rtt} ms RTT")):
        d1 = _median(results, key, "cold discovery, 1 servers")
        d5 = _median(results, key, "cold discovery, 5 servers")
        serial = _ratio(_median(results, key, "sessions only, 5 servers one by one"),
                        _median(results, key, "sessions only, 1 server"))
        if d1 and d5:
            line = f"cold discovery 5 / 1 servers, {where}: {d5 / d1:.2f}× (ratio of medians)"
            paired = paired_ratio(results, key, "cold discovery, 5 servers",
                                  "cold discovery, 1 servers")
            if paired:
                line += f", {paired:.2f}× paired"
            if serial:
                line += f" (sessions one by one would be {serial:.2f}×)"
            out.append(line)
    if "servers" in results and "network" in results:
        out.append("(on loopback opening a session is CPU only, so five cost about five times "
                   "one; docs/performance.md)")
        out.append("")
    if "users" in results:
        u = results["users"]
        out.append(f"## Distinct users (round robin; pool size {u['pool_size']}, "
                   f"idle TTL {u['idle_seconds']:g} s; RSS at start {u['rss_mb_start']} MB)")
        out.append(_table(
            ["users", "runs", "median ms", "p95 ms", "opened/run", "reused/run", "idle",
             "RSS MB", "server RSS MB"],
            [[str(s["users"]), str(s["runs"]), f"{s['median_ms']:.1f}", f"{s['p95_ms']:.1f}",
              f"{s['sessions_opened_per_run']:.2f}", f"{s['sessions_reused_per_run']:.2f}",
              str(s["idle_sessions"]), f"{s['rss_mb']:.1f}", f"{s['tickets_server_rss_mb']:.1f}"]
             for s in u["steps"]],
        ))
        out.append("")
    if "load" in results:
        lo = results["load"]
        out.append(f"## langgraph dev under load (--n-jobs-per-worker {lo['n_jobs_per_worker']}, "
                   f"startup {lo['startup_seconds']} s)")
        out.append(_table(
            ["graph", "users", "runs", "failed", "runs/s", "p50 ms", "p95 ms", "cross-user"],
            [[level["graph"], str(level["users"]), str(level["runs"]), str(level["failed"]),
              f"{level['runs_per_second']:.1f}", str(level["p50_ms"]), str(level["p95_ms"]),
              str(level["cross_user_answers"])] for level in lo["levels"]],
        ))
        for level in lo["levels"]:
            for error in level["errors"]:
                out.append(f"  error ({level['users']} users): {error}")
        out.append("")
    if "server" in results:
        out += _served_section(results["server"], "server", "Through langgraph dev", "server")
    engine = results.get("engine")
    if engine and "skipped" in engine:
        out += [f"## On Aegra: engine section did not run: {engine['skipped']}", ""]
    elif engine:
        out += _served_section(engine, "engine", "On Aegra: clients → API-only process, runs in "
                               "the API + worker process", "engine (both processes)")
    if "profile" in results:
        p = results["profile"]
        out.append(f"## Profile of {p['runs']} warm runs (pyinstrument; {p['note']})")
        out.append(f"kit's own code: {p['kit_share'] * 100:.1f}% of the profiled time")
        out.append(_table(["package (self time)", "share"],
                          [[e["name"], f"{e['share'] * 100:.1f}%"] for e in p["by_package"][:10]]))
        out.append("")
        kit = [[e["name"], f"{e['share'] * 100:.1f}%"] for e in p["kit_functions"][:8]]
        out.append(_table(["kit function (incl. callees, excl. the agent it wraps)", "share"], kit))
        out.append("")
    if "targets" in results:
        out.append("## Targets")
        keys = ("name", "value", "limit", "at_most", "unit", "refused")
        out += [Target(**{k: t[k] for k in keys if k in t}).line() for t in results["targets"]]
    return "\n".join(out)


def chart(results: dict[str, Any], path: Path) -> bool:
    """Draw the chart; False (and no file) when matplotlib is not installed (`.[bench]`)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    if "core" in results:
        names = [n for n in CORE_VARIANTS if n in results["core"]["samples_ms"]]
        data = [results["core"]["samples_ms"][n] for n in names]
        ax.violinplot(data, showmedians=False, showextrema=False)
        ax.boxplot(data, widths=0.15, showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
        _log_ms(ax)
        ax.set_ylabel("ms per run (log scale)")
        ax.set_title("Per run: discover tools + 3 tool calls")
        for i, values in enumerate(data, start=1):
            median = statistics.median(values)
            ax.annotate(f"{median:.1f}", (i, median), textcoords="offset points",
                        xytext=(14, -3), fontsize=8)
    _scaling_panel(axes[0][1], results.get("servers"), "servers per run",
                   ["cold discovery", "onbehalf-cold", "onbehalf-warm", "seed"], "servers",
                   extra=results.get("network"))
    _scaling_panel(axes[1][0], results.get("tools"), "tools on the server",
                   ["cold discovery", "onbehalf-warm", "seed"], "tools")
    ax = axes[1][1]
    users = results.get("users")
    if users:
        steps = users["steps"]
        xs = [str(s["users"]) for s in steps]
        ax.bar(xs, [s["median_ms"] for s in steps], color="tab:blue", alpha=0.7)
        ax.set_xlabel("distinct users (round robin)")
        ax.set_ylabel("median ms per run", color="tab:blue")
        twin = ax.twinx()
        twin.plot(xs, [s["rss_mb"] for s in steps], "o-", color="tab:red")
        twin.set_ylabel("process RSS MB", color="tab:red")
        twin.set_ylim(0, max(s["rss_mb"] for s in steps) * 1.15)
        ax.set_title(f"Users (pool size {users['pool_size']})")
    else:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _scaling_panel(ax: Any, section: dict[str, Any] | None, xlabel: str, series: list[str],
                   unit: str, extra: dict[str, Any] | None = None) -> None:
    """`extra`: the same measurements across the emulated network, dashed."""
    if not section:
        ax.set_axis_off()
        return
    counts = section["counts"]
    sources = [(section, "", "o-")]
    if extra:
        sources.append((extra, f" ({extra.get('rtt_ms', '?'):g} ms RTT)", "s--"))
    for data, suffix, style in sources:
        for label in series:
            ys = [data["stats"].get(f"{label}, {c} {unit}", {}).get("median_ms") for c in counts]
            if any(y is not None for y in ys):
                ax.plot(counts, ys, style, label=label + suffix)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("median ms per run")
    _log_ms(ax)
    ax.set_xticks(counts)
    ax.legend(fontsize=8)
    ax.set_title(f"Cost vs {xlabel}")


def _log_ms(ax: Any) -> None:
    from matplotlib.ticker import ScalarFormatter

    ax.set_yscale("log")
    for axis in (ax.yaxis,):
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(formatter)
    ax.tick_params(axis="y", which="minor", labelsize=7)
