"""A long tool call's progress reaches an SDK client streaming `custom` events."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from langgraph_sdk import get_client

from tests.support.ending_mcp import EndingMcp, run_ending_mcp
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def counting() -> Iterator[EndingMcp]:
    with run_ending_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def server_with_progress(counting: EndingMcp) -> Iterator[LangGraphServer]:
    servers = {"servers": {"counter": {"url": counting.url, "auth": {"type": "none"},
                                       "timeout_seconds": 10}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}, n_jobs=10) as server:
        yield server


async def test_progress_notifications_are_streamed_to_the_sdk_client(
    server_with_progress: LangGraphServer,
) -> None:
    client = get_client(url=server_with_progress.url,
                        headers={"Authorization": f"Bearer {mint('alice')}"})
    custom: list[dict] = []
    try:
        thread = await client.threads.create()
        async for part in client.runs.stream(
            thread["thread_id"], "assistant", stream_mode=["custom", "values"],
            input={"messages": [{"role": "user", "content": "count steps=3"}]},
        ):
            if part.event == "custom":
                custom.append(part.data)
    finally:
        await client.aclose()
    progress = [e for e in custom if e.get("type") == "mcp_progress"]
    assert [(e["progress"], e["total"]) for e in progress] == [(1, 3), (2, 3), (3, 3)]
    assert {(e["server"], e["tool"]) for e in progress} == {("counter", "count")}
    assert progress[-1]["message"] == "step 3 of 3"
    logs = [e for e in custom if e.get("type") == "mcp_log"]
    assert [e["data"] for e in logs] == ["step 1", "step 2", "step 3"]
