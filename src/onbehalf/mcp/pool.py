"""Where open MCP sessions wait between runs of the same user.

A session is pooled under the key of everything that made it: server name,
URL, identity, the fingerprint of the user's token and of the credential
actually sent. A lookup must match all of them, so a session is never handed
to another identity, another token of the same user (a refreshed sign-in
opens a new session), or after a change of the server's URL. A pooled session
is lent to one run at a time, closed when idle too long, when its credential
expires, when the server ends it, or when the pool is full (least recently
used first).

The tool list of a key is cached alongside with a short TTL, dropped when the
server sends `notifications/tools/list_changed`, so a user's next run needs
no `tools/list` even when its session had to be reopened. A run that gives a
session back when its key's list is in the last quarter of its TTL (or past it)
has it listed again over that session in the background (`tools_due`,
`refreshing`), after the run, never beside its calls; a run that finds the list
past its TTL by less than another TTL uses it (`stale_tools`). So the list a warm
user's run starts with is never older than two TTLs, and no warm run waits for a
`tools/list` once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mcp.types import Tool as McpTool

from onbehalf.mcp.sessions import McpSession
from onbehalf.mcp.transport import PerLoop, aclose_request_pool
from onbehalf.settings import KitSettings, current

log = logging.getLogger("onbehalf.mcp")

SWEEP_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class SessionKey:
    """Everything a pooled session was opened for; fingerprints are sha256 prefixes."""

    server: str
    url: str
    identity: str
    token_fingerprint: str
    credential_fingerprint: str


@dataclass(frozen=True)
class PoolSettings:
    idle_seconds: float = 60.0
    max_sessions: int = 256
    tools_cache_seconds: float = 60.0
    max_tool_lists: int = 2048

    @classmethod
    def from_env(cls) -> PoolSettings:
        """From MCP_SESSION_IDLE_SECONDS, MCP_SESSION_POOL_SIZE, MCP_TOOLS_CACHE_SECONDS."""
        kit = current(KitSettings)
        return cls(
            idle_seconds=kit.mcp_session_idle_seconds,
            max_sessions=kit.mcp_session_pool_size,
            tools_cache_seconds=kit.mcp_tools_cache_seconds,
        )


class SessionPool:
    """Idle sessions per key (LRU across all keys) and the per-key tool list cache."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings.from_env()
        self._idle: OrderedDict[int, tuple[SessionKey, McpSession, float]] = OrderedDict()
        self._by_key: dict[SessionKey, list[int]] = {}
        self._by_user: Counter[tuple[str, str]] = Counter()
        self._tools: OrderedDict[SessionKey, tuple[list[McpTool], float]] = OrderedDict()
        self._refreshing: dict[SessionKey, object] = {}
        """Keys being listed again, each with a marker `forget_tools` takes away: a list
        that answers after the server said its tools changed is not kept."""
        self._closing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.opened = 0
        self.reused = 0

    # --- sessions ----------------------------------------------------------------------

    async def acquire(
        self, key: SessionKey, open_session: Callable[[], Awaitable[McpSession]]
    ) -> McpSession:
        """An idle session opened for exactly this key, or a new one."""
        now = time.time()
        while slots := self._by_key.get(key):
            _, session, _ = self._take(slots[-1])
            if session.alive and not session.broken and session.expires_at > now:
                self.reused += 1
                return session
            self._close_soon(session)
        session = await open_session()
        self.opened += 1
        return session

    def release(self, key: SessionKey, session: McpSession, *, reusable: bool) -> None:
        """Give a session back after a run; only a healthy one is kept."""
        if (
            not reusable
            or session.broken
            or not session.alive
            or self.settings.idle_seconds <= 0
            or self.settings.max_sessions <= 0
            or session.expires_at <= time.time()
        ):
            self._close_soon(session)
            return
        self._idle[id(session)] = (key, session, time.monotonic())
        self._by_key.setdefault(key, []).append(id(session))
        self._by_user[(key.identity, key.token_fingerprint)] += 1
        while len(self._idle) > self.settings.max_sessions:
            _, oldest, _ = self._take(next(iter(self._idle)))
            self._close_soon(oldest)
        self._ensure_sweeper()

    def _take(self, slot: int) -> tuple[SessionKey, McpSession, float]:
        entry = self._idle.pop(slot)
        slots = self._by_key[entry[0]]
        slots.remove(slot)
        if not slots:
            del self._by_key[entry[0]]
        user = (entry[0].identity, entry[0].token_fingerprint)
        self._by_user[user] -= 1
        if self._by_user[user] <= 0:
            del self._by_user[user]
        return entry

    def holds_idle(self, identity: str, token_fingerprint: str) -> bool:
        """Whether sessions of this user and token wait here (a prewarm would add nothing)."""
        return (identity, token_fingerprint) in self._by_user

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(), context=contextvars.Context()
            )

    async def _sweep_forever(self) -> None:
        while self._idle:
            await asyncio.sleep(min(SWEEP_INTERVAL_SECONDS, max(self.settings.idle_seconds, 0.1)))
            self.sweep()

    def sweep(self) -> None:
        """Close idle sessions that waited too long, expired, or were ended by the server."""
        now_mono, now = time.monotonic(), time.time()
        for slot, (_, session, since) in list(self._idle.items()):
            if (
                now_mono - since > self.settings.idle_seconds
                or session.expires_at <= now
                or not session.alive
                or session.broken
            ):
                self._take(slot)
                self._close_soon(session)
        for key, (_, expires) in list(self._tools.items()):
            if self._too_old(expires, now_mono):
                del self._tools[key]

    def _close_soon(self, session: McpSession) -> None:
        self._in_background(session.aclose())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task of its own context, awaited by `aclose`."""
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every idle session and the loop's shared connections (shutdown, tests)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
        sessions = [s for _, s, _ in self._idle.values()]
        self._idle.clear()
        self._by_key.clear()
        self._by_user.clear()
        self._tools.clear()
        self._refreshing.clear()
        await asyncio.gather(*(s.aclose() for s in sessions), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await aclose_request_pool()

    # --- tool lists ----------------------------------------------------------------------

    def cached_tools(self, key: SessionKey) -> list[McpTool] | None:
        entry = self._tools.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        self._tools.move_to_end(key)
        return entry[0]

    def tools_due(self, key: SessionKey) -> bool:
        """Whether the key's list is cached and in the last quarter of its TTL, or past it
        (a list that was never cached, or was dropped, is listed by the next run)."""
        entry = self._tools.get(key)
        return entry is not None and key not in self._refreshing and (
            entry[1] - time.monotonic() < self.settings.tools_cache_seconds / 4)

    def stale_tools(self, key: SessionKey) -> list[McpTool] | None:
        """The key's list when its TTL ran out less than another TTL ago (see above); None
        when there is none or it is older."""
        entry = self._tools.get(key)
        if entry is None:
            return None
        if self._too_old(entry[1], time.monotonic()):
            self._tools.pop(key, None)
            return None
        return entry[0]

    def _too_old(self, expires: float, now: float) -> bool:
        """A list past its TTL by another TTL is used by no run (`stale_tools`)."""
        return expires + self.settings.tools_cache_seconds <= now

    def refreshing(self, key: SessionKey, list_again: Callable[[], Awaitable[list[McpTool]]]
                   ) -> None:
        """List the key's tools again in the background (over the session of the run that
        got the stale list: the same key, so the same user, token and credential), unless
        that is under way already."""
        if key in self._refreshing:
            return
        marker = self._refreshing[key] = object()

        async def refresh() -> None:
            try:
                tools = await list_again()
                if self._refreshing.get(key) is marker:
                    self.remember_tools(key, tools)
            except Exception:  # the next run lists them itself
                log.debug("listing tools again in the background failed", exc_info=True)
                self._tools.pop(key, None)
            finally:
                if self._refreshing.get(key) is marker:
                    del self._refreshing[key]

        self._in_background(refresh())

    def remember_tools(self, key: SessionKey, tools: list[McpTool]) -> None:
        if self.settings.tools_cache_seconds <= 0:
            return
        self._tools[key] = (tools, time.monotonic() + self.settings.tools_cache_seconds)
        self._tools.move_to_end(key)
        while len(self._tools) > self.settings.max_tool_lists:
            self._tools.popitem(last=False)

    def forget_tools(self, key: SessionKey) -> None:
        self._tools.pop(key, None)
        self._refreshing.pop(key, None)


_pools = PerLoop(SessionPool)


def session_pool() -> SessionPool:
    """The pool of the running event loop (sessions cannot cross loops)."""
    return _pools.get()
