"""Where the time of a warm run goes: pyinstrument over many runs, summarised three ways.

- by package: self time of every sampled frame, grouped by the package it
  belongs to (ours, langgraph, langchain, mcp, httpx, asyncio, ...), with time
  spent waiting in `epoll` (the MCP server answering) shown separately;
- by function: the functions with the most self time;
- our kit: time inside `onbehalf.mcp` / `onbehalf` code, including what it
  calls, but not the agent's own work it wraps (the model call and the tool
  execution that `awrap_model_call` / `awrap_tool_call` hand on to).

Sampling is synchronous (`async_mode="disabled"`): each sample is the stack the
event loop is running, so the time of an `await` is counted where the loop
spends it, not where the coroutine waits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench.measure import Variant, sequential

HANDLER_FUNCTIONS = frozenset({
    "execute", "_execute_model_async", "_execute_tool_async",
    "handle_async_request", "__aiter__", "aclose",
})
"""Library frames through which kit wrappers hand work on: to the agent (the model call, the
tool execution) and to httpx (the kit's transport wrapper around each HTTP request and body);
their time is the work itself, not the kit's overhead."""

_SITE = re.compile(r"site-packages/([^/]+)/")
_STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+?)(?:\.py)?/")
_OURS = re.compile(r"/src/(onbehalf/mcp|onbehalf|agents)/")


def package_of(frame: Frame) -> str:
    path = frame.file_path or ""
    if frame.function in ("epoll.poll", "select.select", "select.epoll.poll"):
        return "waiting for I/O (epoll)"
    ours = _OURS.search(path)
    if ours:
        return f"{ours.group(1).replace('/', '.')} (ours)"
    site = _SITE.search(path)
    if site:
        return site.group(1).split(".")[0]
    std = _STDLIB.search(path + "/")
    if std:
        return f"stdlib {std.group(1)}"
    if path.startswith("<") or not path:
        parent = frame.parent
        return package_of(parent) if parent is not None else "builtins"
    return Path(path).name


def _frames(frame: Frame) -> Iterator[Frame]:
    stack = [frame]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children)


def _is_ours(frame: Frame) -> bool:
    path = frame.file_path or ""
    return "/src/onbehalf/mcp/" in path or "/src/onbehalf/" in path


def _kit_time(frame: Frame, inside: bool = False) -> float:
    """Self time of frames reached from kit code without passing through a handler."""
    entering = _is_ours(frame)
    if inside and not entering and frame.function in HANDLER_FUNCTIONS:
        return 0.0
    inside = inside or entering
    total = frame.total_self_time if inside and not frame.is_synthetic else 0.0
    return total + sum(_kit_time(child, inside) for child in frame.children)


def _kit_inclusive(root: Frame) -> Counter[str]:
    """Per kit function: its time including callees, excluding the handlers it wraps."""
    result: Counter[str] = Counter()
    for frame in _frames(root):
        if _is_ours(frame) and not frame.is_synthetic:
            parent = frame.parent
            if parent is not None and _is_ours(parent) and parent.function == frame.function:
                continue
            result[f"{frame.function} ({_short(frame)})"] += _kit_time(frame)
    return result


def _short(frame: Frame) -> str:
    path = frame.file_path or ""
    for marker in ("/src/", "site-packages/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{frame.line_no}"


async def profile_runs(variant: Variant, *, runs: int, out_dir: Path,
                       budget_seconds: float | None = None) -> dict[str, Any]:
    """Profile `runs` runs of `variant` (fewer when `budget_seconds` run out); writes the
    call tree to `profile_<name>.txt`."""
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    runs = len(await sequential(variant, runs=runs, budget_seconds=budget_seconds))
    profiler.stop()
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    assert root is not None
    total = root.time or 1e-9
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for frame in _frames(root):
        if frame.is_synthetic:
            continue
        spent = frame.total_self_time
        by_package[package_of(frame)] += spent
        by_function[f"{frame.function} ({_short(frame)})"] += spent
    kit_total = _kit_time(root)
    kit_functions = _kit_inclusive(root)
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (out_dir / f"profile_{variant.name}.txt").write_text(text)

    def top(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"name": name, "ms_per_run": round(seconds * 1000 / runs, 3),
             "share": round(seconds / total, 4)}
            for name, seconds in counter.most_common(n)
        ]

    return {
        "variant": variant.name,
        "runs": runs,
        "profiled_ms_per_run": round(total * 1000 / runs, 3),
        "note": "times include the profiler's own overhead; compare shares, not absolutes",
        "kit_ms_per_run": round(kit_total * 1000 / runs, 3),
        "kit_share": round(kit_total / total, 4),
        "by_package": top(by_package, 14),
        "by_function": top(by_function, 15),
        "kit_functions": top(kit_functions, 15),
    }
