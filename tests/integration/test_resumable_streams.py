"""A server that closes a call's stream and lets the client resume it (MCP 2025-11-25).

A streamable-HTTP server may end the SSE stream of a request before answering (to
free a connection during a long call, or behind a proxy that cuts long responses),
having sent an event id and a `retry` delay; the client comes back with `GET` and
`Last-Event-ID` and receives the rest, the answer included. That is not a lost
connection: the call completes once, on the same session, which stays pooled. A real
FastMCP server with an in-memory event store; its tool closes its own stream mid-call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

from onbehalf.mcp.pool import session_pool
from tests.support.agents import say, scripted_agent, tool_messages, tool_payload, use_servers
from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port, mint

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("empty_pool")]


@dataclass
class MemoryEventStore(EventStore):
    """Every event of every stream, in order; ids are positions (enough for one test)."""

    events: list[tuple[StreamId, JSONRPCMessage | None]] = field(default_factory=list)
    replays: int = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self.events.append((stream_id, message))
        return str(len(self.events))

    async def replay_events_after(self, last_event_id: EventId,
                                  send_callback: EventCallback) -> StreamId | None:
        self.replays += 1
        position = int(last_event_id)
        stream = self.events[position - 1][0]
        for index, (stream_id, message) in enumerate(self.events[position:], position + 1):
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, str(index)))
        return stream


@dataclass
class ResumingServer:
    url: str
    store: MemoryEventStore
    calls: int = 0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResumingServer]:
    port = free_port()
    state = ResumingServer(url=f"http://127.0.0.1:{port}/mcp", store=MemoryEventStore())
    mcp = FastMCP("resuming", event_store=state.store, retry_interval=50)

    @mcp.tool()
    async def slow_echo(text: str, ctx: Context) -> str:
        """Say `text` back, after closing this call's stream (the client resumes it)."""
        state.calls += 1
        await ctx.report_progress(1, 2, "halfway")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.3)
        return json.dumps({"echo": text})

    with serve_in_thread(mcp.streamable_http_app(), port):
        use_servers(monkeypatch, resuming=state.url)
        yield state


async def test_a_call_whose_stream_the_server_closed_is_resumed_and_answered_once(
    server: ResumingServer,
) -> None:
    token = mint("alice")
    for text in ("one", "two"):  # the second run on the same, pooled session
        agent, _ = scripted_agent([("slow_echo", {"text": text})])
        [message] = tool_messages(await agent.ainvoke(say(text), context={"user_token": token}))
        assert message.status != "error", message.content
        assert tool_payload(message) == {"echo": text}
    assert server.calls == 2
    assert server.store.replays >= 2  # each answer arrived on a resumed stream
    pool = session_pool()
    assert (pool.opened, pool.reused, pool.idle_count) == (1, 1, 1)  # one session, lent again
