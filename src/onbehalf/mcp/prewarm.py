"""Prewarm: open a user's MCP sessions while their run is still being created.

When the server accepts a run (`src/auth.py`, after its authorization handler
passed), `start_prewarm` schedules, in the background, exactly what the run's
first model call would do: a `RunScope` for that user, token and graph is
loaded (sessions opened, tools listed) and released into the pool with
`reusable=True`. The run then finds those sessions under the same pool key
(server, URL, identity, token fingerprint, credential fingerprint), so a cold
user starts like a warm one.

Safety: the prewarm goes through the same token resolution (the sealed token,
bound to its identity), the same `RunScope` and the same pool as a run, so it
can only ever produce sessions that this user's own run with this very token
would have opened; it never lends anything itself. Idle prewarmed sessions
obey the pool's idle TTL like any other.

Cost to the run: none when it fails (the run opens its own). A run that starts
while its user's prewarm is still opening waits for it (`await_prewarm`): that
work began earlier than the run's own would have, so waiting is never slower;
a prewarm still queued behind the concurrency bound is cancelled instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import weakref
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from langgraph.config import get_config

from onbehalf.mcp.pool import session_pool
from onbehalf.mcp.run_scope import RunScope
from onbehalf.mcp.tokens import UserToken, resolve_user_token
from onbehalf.mcp.transport import PerLoop
from onbehalf.servers import aload_servers_config
from onbehalf.settings import KitSettings, current

log = logging.getLogger("onbehalf.mcp")

MAX_CONCURRENT_PREWARMS = 8
"""Prewarms opening sessions at once per process; more wait (and a run cancels a waiting one)."""


def prewarm_enabled() -> bool:
    """`ONBEHALF_PREWARM=0` turns prewarming off (e.g. when runs execute in another process)."""
    return current(KitSettings).onbehalf_prewarm


@dataclass(frozen=True)
class GraphTools:
    """What a graph's `McpToolsMiddleware` narrows the servers file to."""

    server_names: tuple[str, ...] | None
    allowlist: tuple[str, ...] | None


_graphs: weakref.WeakKeyDictionary[Any, GraphTools] = weakref.WeakKeyDictionary()


def register_graph(graph: Any, middleware: Any) -> None:
    """Note which servers and tools a compiled graph's middleware uses (`build_mcp_agent`)."""
    names, allow = middleware.server_names, middleware.allowlist
    _graphs[graph] = GraphTools(
        server_names=tuple(names) if names is not None else None,
        allowlist=tuple(allow) if allow is not None else None,
    )


SYSTEM_ASSISTANT_NAMESPACE = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
"""`langgraph_api.graph.NAMESPACE_GRAPH`: a graph's own assistant id is uuid5 of it and the id."""


def _deployment_graphs() -> dict[str, Any]:
    """The server's graphs by id: only in a LangGraph server process, where the process
    that accepts a run also executes it. Empty elsewhere: in process, and on Aegra, whose
    API process queues runs for worker processes (prewarming there would open sessions in
    a process that never uses them; docs/performance.md, "On Aegra")."""
    loaded = sys.modules.get("langgraph_api.graph")
    return dict(getattr(loaded, "GRAPHS", None) or {})


def graph_tools_for(assistant_id: Any) -> GraphTools | None:
    """The MCP shape of the graph a run's assistant id names, if this process knows it.

    Only the deployment's own (system) assistants resolve: a graph id, or the
    assistant id the server derives from it. Assistants users created, and
    graphs without MCP, give None (no prewarm).
    """
    wanted = str(assistant_id)
    for graph_id, graph in _deployment_graphs().items():
        if wanted in (graph_id, str(uuid5(SYSTEM_ASSISTANT_NAMESPACE, graph_id))):
            try:
                return _graphs.get(graph)
            except TypeError:  # a graph factory or an unhashable value: not ours
                return None
    return None


@dataclass
class _Prewarm:
    task: asyncio.Task[None] | None = None
    started: bool = False


class Prewarmer:
    """The process's prewarms, at most `MAX_CONCURRENT_PREWARMS` opening at once."""

    def __init__(self, limit: int = MAX_CONCURRENT_PREWARMS) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._inflight: dict[tuple[str, str], _Prewarm] = {}
        self.started = 0
        self.finished = 0
        self.failed = 0
        self.skipped = 0

    def start(self, user: UserToken, shape: GraphTools) -> bool:
        """Schedule a prewarm for this user and token; False when one is already under way."""
        key = (user.identity, user.fingerprint)
        if key in self._inflight:
            self.skipped += 1
            return False
        entry = _Prewarm()
        self._inflight[key] = entry
        # a context of its own: the sessions it opens outlive the request that started it
        entry.task = asyncio.get_running_loop().create_task(
            self._run(key, entry, user, shape), context=contextvars.Context()
        )
        return True

    async def _run(self, key: tuple[str, str], entry: _Prewarm, user: UserToken,
                   shape: GraphTools) -> None:
        try:
            async with self._slots:
                entry.started = True
                self.started += 1
                await _warm(user, shape)
                self.finished += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed += 1
            log.info("prewarm for a run failed; the run opens its own sessions", exc_info=True)
        finally:
            if self._inflight.get(key) is entry:
                del self._inflight[key]

    async def wait_for(self, user: UserToken, *, at_most_seconds: float) -> None:
        """Let a run take over its user's prewarm: wait if it is opening, cancel it if queued."""
        entry = self._inflight.get((user.identity, user.fingerprint))
        if entry is None or entry.task is None:
            return
        if not entry.started:
            entry.task.cancel()
            return
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(asyncio.shield(entry.task), at_most_seconds)


async def _warm(user: UserToken, shape: GraphTools) -> None:
    config = await aload_servers_config()
    if shape.server_names is not None:
        servers = {k: v for k, v in config.servers.items() if k in shape.server_names}
        config = config.model_copy(update={"servers": servers})
    if not config.servers:
        return
    scope = RunScope(
        identity=user.identity,
        fingerprint=user.fingerprint,
        config=config,
        allowlist=list(shape.allowlist) if shape.allowlist is not None else None,
    )
    try:
        await scope.load(user)
    except BaseException:
        await scope.aclose(reusable=False)
        raise
    log.info("prewarmed %d MCP session(s) for a new run", len(scope.sessions))
    await scope.aclose(reusable=True)


_prewarmers = PerLoop(Prewarmer)


def prewarmer() -> Prewarmer:
    """The prewarmer of the running event loop (its sessions go to that loop's pool)."""
    return _prewarmers.get()


def _pooling_on() -> bool:
    settings = session_pool().settings
    return settings.idle_seconds > 0 and settings.max_sessions > 0


async def start_prewarm(server_user: Any, assistant_id: Any) -> bool:
    """Called by the server edge once a run request passed authorization; never raises.

    Returns at once (the work is a background task); True when a prewarm was scheduled.
    """
    try:
        if not prewarm_enabled():
            return False
        shape = graph_tools_for(assistant_id)
        if shape is None or not _pooling_on():
            return False
        user = await resolve_user_token(
            None, {"configurable": {"langgraph_auth_user": server_user}}
        )
        if user.seconds_left() <= 0 or session_pool().holds_idle(user.identity,
                                                                  user.fingerprint):
            return False  # expired, or already warm: the run takes its pooled sessions
        return prewarmer().start(user, shape)
    except Exception:
        log.info("no prewarm for this run", exc_info=True)
        return False


def _config_or_none() -> dict[str, Any] | None:
    with contextlib.suppress(RuntimeError):
        return dict(get_config())
    return None


PREWARM_WAIT_SECONDS = 10.0


async def take_over_prewarm(user: UserToken, at_most_seconds: float = PREWARM_WAIT_SECONDS
                            ) -> None:
    """A run's first model call takes over its user's prewarm (`Prewarmer.wait_for`); when
    none is under way (almost always) this costs a dict lookup."""
    pending = _prewarmers.peek()
    if pending is not None and pending._inflight:
        await pending.wait_for(user, at_most_seconds=at_most_seconds)
