"""No token at rest: after a busy scenario, every raw token issued is found nowhere.

A dedicated `langgraph dev` (its own working directory, `LOG_LEVEL=DEBUG`,
server log level DEBUG), its own tickets MCP server logging everything at
DEBUG, and its own Redis serve several users: runs, create+join, streams in
every mode, store puts, thread metadata, a stateless run, a background
worker run, and refused requests. Then everything that can be read is
scanned for every token issued in the test (DESIGN.md §7: the whole JWT, its
signature alone, or a std/urlsafe base64 copy of either): API read-backs, the
stream parts, `.langgraph_api/` after the server stopped, the server's log,
the MCP server's log, and every key and value in Redis. Each scan has a
positive control showing it reads real content.

A last scenario checkpoints the `assistant` graph into PostgreSQL
(`langgraph-checkpoint-postgres`) in process and scans every table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pickle
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agents.assistant.graph import graph as assistant
from onbehalf.mcp.pool import session_pool
from onbehalf.settings import HandoffSettings
from onbehalf.worker.handoff import TokenHandoff
from onbehalf.worker.runner import run_execution
from tests.security.probes import (
    FIGURES,
    as_json,
    client_for,
    say,
    scan,
    scan_files,
    sha256,
    tool_payloads,
)
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.leaks import find_leaks
from tests.support.mcp_server import TicketsMcpServer, run_tickets_mcp
from tests.support.redis_server import PrivateRedis, redis_server_executable
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio

USERS = ("alice", "bob", "carol")
STREAM_MODES = ["values", "updates", "messages", "messages-tuple", "events", "debug",
                "checkpoints", "tasks"]

_DEBUG_LOGGING = textwrap.dedent('''
    import logging, sys
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
''')


@contextlib.contextmanager
def tickets_mcp_logging_everything(tmp: Path) -> Iterator[TicketsMcpServer]:
    """The tickets MCP server with the root logger at DEBUG (it has no log-level setting).

    A `sitecustomize` on PYTHONPATH configures logging before the server starts;
    the SDK's own `basicConfig` then changes nothing.
    """
    site = tmp / "debug-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_DEBUG_LOGGING)
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    with run_tickets_mcp({"PYTHONPATH": pythonpath}) as server:
        yield server


@dataclass
class AtRest:
    """Everything the scenario left behind, read back after the servers stopped."""

    tokens: list[str]
    canary: str
    read_backs: list[Any] = field(default_factory=list)
    stream_parts: list[Any] = field(default_factory=list)
    worker_events: list[Any] = field(default_factory=list)
    state_files: list[Path] = field(default_factory=list)
    server_log: str = ""
    mcp_log: str = ""
    redis_dump: list[tuple[bytes, bytes]] = field(default_factory=list)
    redis_control: str = ""
    thread_ids: list[str] = field(default_factory=list)


async def _user_scenario(server: LangGraphServer, user: str, token: str, rest: AtRest) -> None:
    client = client_for(server.url, token)
    thread = await client.threads.create(metadata={"project": "apollo", "user": user})
    tid = thread["thread_id"]
    rest.thread_ids.append(tid)
    await client.threads.update(tid, metadata={"stage": "review"})
    await client.runs.wait(tid, "assistant", input=say(f"list_tickets {rest.canary}"))
    run = await client.runs.create(tid, "assistant", input=say("whoami"))
    await client.runs.join(tid, run["run_id"])
    async for part in client.runs.stream(tid, "assistant", input=say("list_tickets"),
                                         stream_mode=STREAM_MODES):
        rest.stream_parts.append([part.event, part.data])
    await client.store.put_item((user, "prefs"), "theme", {"v": "dark", "note": rest.canary})
    titled = await client.runs.wait(None, "thread_title", input=say(f"{user} wants a title"))
    rest.read_backs += [
        titled,
        await client.runs.get(tid, run["run_id"]),
        await client.runs.list(tid),
        await client.threads.get(tid),
        await client.threads.search(),
        await client.threads.get_state(tid),
        await client.threads.get_history(tid, limit=100),
        await client.store.search_items((user,)),
        await client.store.get_item((user, "prefs"), "theme"),
        await client.assistants.search(),
    ]


async def _worker_scenario(server: LangGraphServer, redis_url: str, token: str,
                           rest: AtRest) -> None:
    settings = HandoffSettings(redis_url=redis_url, langgraph_url=server.url)
    execution_id = f"exec-{uuid.uuid4().hex}"
    async with TokenHandoff(settings) as handoff:
        await handoff.put(execution_id, token)
    async for event in run_execution(execution_id, "assistant", say("whoami"),
                                     settings=settings):
        rest.worker_events.append(event)


def _redis_everything(url: str) -> list[tuple[bytes, bytes]]:
    """Every key of every database, with its value whatever its type."""
    dump = []
    for db in range(4):
        client = redis.Redis.from_url(url, db=db, socket_timeout=5)
        with client:
            for key in client.scan_iter(count=1000):
                kind = client.type(key).decode()
                if kind == "string":
                    value: Any = client.get(key)
                elif kind == "hash":
                    value = client.hgetall(key)
                elif kind == "list":
                    value = client.lrange(key, 0, -1)
                elif kind == "set":
                    value = client.smembers(key)
                elif kind == "zset":
                    value = client.zrange(key, 0, -1, withscores=True)
                elif kind == "stream":
                    value = client.xrange(key)
                else:
                    value = client.dump(key)
                dump.append((key, repr(value).encode() + b"\0" + _raw_bytes(value)))
    return dump


def _raw_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return b"\0".join(_raw_bytes(k) + b"\0" + _raw_bytes(v) for k, v in value.items())
    if isinstance(value, list | set | tuple):
        return b"\0".join(_raw_bytes(v) for v in value)
    return str(value).encode()


async def _drive(server: LangGraphServer, redis_url: str, tokens: dict[str, str],
                 worker_token: str, refused: list[str], rest: AtRest) -> None:
    for user, token in tokens.items():
        await _user_scenario(server, user, token, rest)
    await _worker_scenario(server, redis_url, worker_token, rest)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for token in refused:
            response = await http.post("/threads/search", json={},
                                       headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401


async def _plant(redis_url: str, token: str) -> None:
    async with TokenHandoff(HandoffSettings(redis_url=redis_url)) as handoff:
        await handoff.put(f"control-{uuid.uuid4().hex}", token)


@pytest.fixture(scope="module")
def at_rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AtRest]:
    tmp = tmp_path_factory.mktemp("at-rest")
    executable = redis_server_executable()
    if executable is None:
        pytest.fail("no redis-server for the at-rest scenario (see tests/support/redis_server.py)")
    tokens = {user: mint(user, name=f"{user.title()} Example") for user in USERS}
    worker_token = mint("alice")
    refused = [mint("alice", ttl=-300), mint("bob", audience="someone-else")]
    rest = AtRest(tokens=[*tokens.values(), worker_token, *refused],
                  canary=f"canary-{uuid.uuid4().hex}")
    private_redis = PrivateRedis(executable, lambda: tmp_path_factory.mktemp("redis-at-rest"))
    private_redis.start()
    workdir = tmp / "langgraph"
    workdir.mkdir()
    try:
        with tickets_mcp_logging_everything(tmp) as mcp:
            servers = {"servers": {"tickets": {"url": mcp.url}}}
            env = {"MCP_SERVERS": json.dumps(servers), "LOG_LEVEL": "DEBUG"}
            with run_langgraph_dev(env, workdir=workdir) as server:
                asyncio.run(_drive(server, private_redis.url, tokens, worker_token, refused,
                                   rest))
                server.stop()  # the in-memory runtime writes .langgraph_api/ on shutdown
                rest.state_files = server.written_files()
                rest.server_log = server.log_text()
            rest.mcp_log = mcp.stderr_text() + mcp.stdout_text()
        # A control that must be found: a handed-off token nobody took.
        rest.redis_control = mint("control-user")
        asyncio.run(_plant(private_redis.url, rest.redis_control))
        rest.redis_dump = _redis_everything(private_redis.url)
        yield rest
    finally:
        private_redis.stop()


def test_the_scanner_finds_every_form_of_a_planted_token() -> None:
    """Positive control for every scan below: each form DESIGN.md §7 names is found."""
    token = mint("alice")
    signature = token.rsplit(".", 1)[1]
    plants = {
        "whole JWT in a pickle": pickle.dumps({"user": {"token": token}}),
        "signature in JSON": json.dumps({"sig": signature}).encode(),
        "urlsafe base64 of the signature": base64.urlsafe_b64encode(signature.encode()),
    }
    for offset in range(3):
        blob = base64.b64encode(b"x" * offset + token.encode() + b"tail")
        plants[f"std base64 of the JWT inside a blob, offset {offset}"] = b"data:" + blob
    for what, haystack in plants.items():
        assert find_leaks(haystack, token), f"the scanner missed the {what}"
    assert not find_leaks(pickle.dumps({"user": "alice", "sha": sha256(token)}), token)


def test_the_scenario_really_ran(at_rest: AtRest) -> None:
    """Positive controls: the users' runs happened as them, and the worker finished."""
    whoami = [p for p in tool_payloads(
        m for state in at_rest.read_backs if isinstance(state, dict)
        for m in (state.get("values") or {}).get("messages", [])
    ) if "token_sha256" in p]
    assert {p["as_user"] for p in whoami} >= set(USERS)
    assert {p["token_sha256"] for p in whoami} <= {sha256(t) for t in at_rest.tokens}
    assert at_rest.worker_events[-1]["event"] == "done"
    assert "as_user: alice" in at_rest.worker_events[-1]["output"]
    FIGURES["at_rest_tokens"] = len(at_rest.tokens)


def test_no_token_in_api_read_backs(at_rest: AtRest) -> None:
    text = as_json(at_rest.read_backs)
    assert at_rest.canary in text and '"sealed_token": "v1.' in text  # real records
    assert scan("API read-backs", text, at_rest.tokens) == []


def test_no_token_in_streamed_parts(at_rest: AtRest) -> None:
    text = as_json(at_rest.stream_parts) + as_json(at_rest.worker_events)
    kinds = {part[0].split("|")[0] for part in at_rest.stream_parts}
    assert {"values", "updates", "messages", "events", "debug", "checkpoints"} <= kinds, kinds
    assert scan("stream parts", text, at_rest.tokens) == []


def test_no_token_in_the_servers_state_files(at_rest: AtRest) -> None:
    assert at_rest.state_files, "langgraph dev wrote no .langgraph_api files"
    assert any(at_rest.canary.encode() in p.read_bytes() for p in at_rest.state_files), \
        "the canary is in no state file: the scan would not see a token either"
    assert scan_files(at_rest.state_files, at_rest.tokens) == []


def test_no_token_in_the_servers_debug_log(at_rest: AtRest) -> None:
    log = at_rest.server_log
    assert all(tid in log for tid in at_rest.thread_ids), "the log does not show the requests"
    assert "debug" in log.lower() and "401" in log
    assert scan("langgraph dev log", log, at_rest.tokens) == []


def test_no_token_in_the_mcp_servers_debug_log(at_rest: AtRest) -> None:
    log = at_rest.mcp_log
    assert log.count("DEBUG ") >= 10, "the MCP server did not log at DEBUG"
    # It logs whole tool results at DEBUG: whoami's fingerprint of a scenario token is there.
    assert any(sha256(token) in log for token in at_rest.tokens)
    assert scan("tickets MCP log", log, at_rest.tokens) == []


def test_no_token_in_redis_after_a_worker_run(at_rest: AtRest) -> None:
    everything = b"\n".join(key + b"\0" + value for key, value in at_rest.redis_dump)
    assert find_leaks(everything, at_rest.redis_control), "the Redis scan missed a planted token"
    assert scan("Redis", everything, at_rest.tokens) == []


# --- PostgreSQL checkpointer ---------------------------------------------------------------

POSTGRES_DSN = os.environ.get("ONBEHALF_TEST_POSTGRES_DSN",
                              "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database for this test, dropped afterwards; skip if no PostgreSQL answers."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg[binary] is not installed")
    try:
        admin = psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_DSN} ({str(exc).strip()[:120]})")
    name = f"onbehalf_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_everything(dsn: str) -> tuple[list[str], bytes]:
    """Every row of every table in the database, cells as raw bytes and as text."""
    import psycopg

    chunks: list[bytes] = []
    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) "
            "FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for cell in row:
                    if isinstance(cell, bytes | memoryview):
                        chunks.append(bytes(cell))
                    else:
                        chunks.append(json.dumps(cell, default=str).encode())
            chunks.append(conn.execute(
                f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"
            ).fetchone()[0].encode())
    return tables, b"\n".join(chunks)


async def test_no_token_in_postgres_checkpoints(
    postgres_database: str, tickets_mcp_server: TicketsMcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aio = pytest.importorskip("langgraph.checkpoint.postgres.aio",
                              reason="langgraph-checkpoint-postgres is not installed")
    monkeypatch.setenv("MCP_SERVERS", json.dumps(
        {"servers": {"tickets": {"url": tickets_mcp_server.url}}}))
    canary = f"canary-{uuid.uuid4().hex}"
    tokens = {user: mint(user) for user in ("alice", "bob")}
    try:
        async with aio.AsyncPostgresSaver.from_conn_string(postgres_database) as saver:
            await saver.setup()
            graph = assistant.copy(update={"checkpointer": saver})
            for user, token in tokens.items():
                config = {"configurable": {"thread_id": f"{user}-{uuid.uuid4().hex[:8]}"}}
                await graph.ainvoke(say(f"list_tickets {canary}"), config=config,
                                    context={"user_token": token})
                state = await graph.ainvoke(say("whoami"), config=config,
                                            context={"user_token": token})
                (payload,) = tool_payloads(state["messages"][-2:])
                assert payload["as_user"] == user
                assert payload["token_sha256"] == sha256(token)
    finally:
        await session_pool().aclose()
    tables, everything = _postgres_everything(postgres_database)
    assert {"public.checkpoints", "public.checkpoint_blobs", "public.checkpoint_writes"} <= \
        set(tables), tables
    assert canary.encode() in everything, "the canary is not in the database: nothing to scan"
    assert sha256(tokens["alice"]).encode() in everything  # whoami's result was checkpointed
    FIGURES["postgres_tables_scanned"] += len(tables)
    assert scan("PostgreSQL checkpoints", everything, list(tokens.values())) == []
