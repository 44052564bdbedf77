"""`onbehalf connections` as an operator runs it: its own process, the documented environment.

docs/deployment.md ("Connected accounts over OAuth", Operators) says what the command
needs: the server's servers file, `REDIS_URL`, `TOKEN_SEALING_KEY`, `OAUTH_KEY_PREFIX`
and, for a server with a pre-registered client, the variables its `client_id_env` /
`client_secret_env` name. Nothing of the browser flow (`ONBEHALF_PUBLIC_URL`,
`OAUTH_CONFIRM_URL`) and no JWT settings. Each test builds exactly that environment
(the test process's own minus every onbehalf variable), runs `python -m onbehalf` in a
fresh working directory (no `.env`, no `mcp_servers.json`), and checks the result
where it matters: in Redis and at the authorization server.

The connection itself is made the way the server makes it, in this process, through
the functions the routes call, against the real AS (tests/support/oauth_provider.py).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import anyio
import pytest
import redis.asyncio as aioredis
from pydantic import AnyUrl

from onbehalf.oauth import accounts
from onbehalf.oauth.discovery import forget_discovery
from onbehalf.oauth.store import OAuthStore, StoredTokens
from onbehalf.sealing import SealingKeys
from tests.support.oauth_provider import (
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    OAuthWorld,
    oauth_world,
)
from tests.support.tokens import TEST_SEALING_KEY, free_port

pytestmark = pytest.mark.anyio

PUBLIC = "http://127.0.0.1:9"  # the server's public URL: the server's, never the operator's
PROCESS_TIMEOUT = 60
ONBEHALF_VARIABLES = ("AUTH_", "TOKEN_", "MCP_", "AGENT_", "REDIS_", "LANGGRAPH_", "ONBEHALF_",
                      "OAUTH_", "USER_SECRETS_", "NOTES_CLIENT_")


@dataclass
class Deployment:
    """One server's configuration, and what an operator's shell gets from it."""

    world: OAuthWorld
    store: OAuthStore
    server: accounts.OAuthServer
    servers_file: Path
    workdir: Path
    documented: dict[str, str]

    def env(self, *, without: str | None = None, **changes: str) -> dict[str, str]:
        """The operator's environment: only what docs/deployment.md lists, nothing inherited."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ONBEHALF_VARIABLES)}
        env.update(self.documented, **changes)
        if without:
            env.pop(without)
        return env

    async def onbehalf(self, *args: str, env: dict[str, str] | None = None) -> Any:
        with anyio.fail_after(PROCESS_TIMEOUT):
            return await anyio.run_process(
                [sys.executable, "-m", "onbehalf", "connections", *args],
                env=env or self.env(), cwd=self.workdir, check=False)

    async def connect(self, user: str) -> StoredTokens:
        """What the server does: start, consent at the AS, callback, confirm; tokens stored."""
        link = await accounts.start_flow(user, self.server)
        location = await anyio.to_thread.run_sync(self.world.approve_url, link, user)
        assert location.startswith(f"{PUBLIC}/oauth/callback?")
        page = await accounts.hold_callback(dict(parse_qsl(urlsplit(location).query)))
        query = parse_qs(urlsplit(page).query)
        answer = await accounts.confirm_flow(user, query["flow"][0], query["confirm"][0],
                                             self.server)
        assert answer["status"] == "connected"
        tokens = await self.store.tokens(user, self.server.name)
        assert isinstance(tokens, StoredTokens) and tokens.refresh_token
        assert self.world.live_grants(user) == 1
        return tokens


@pytest.fixture
async def store(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OAuthStore]:
    """The server's store (a prefix of this test's own), seen from this process."""
    prefix = f"cli-operator-{uuid.uuid4().hex[:8]}:"
    client = aioredis.from_url(redis_url, decode_responses=True)
    store = OAuthStore(client, url=redis_url, prefix=prefix,
                       keys=SealingKeys.parse(TEST_SEALING_KEY))
    accounts.use_oauth_store(store)
    monkeypatch.setenv("ONBEHALF_PUBLIC_URL", PUBLIC)  # the server has it; the operator not
    forget_discovery()
    yield store
    accounts.use_oauth_store(None)
    await store.aclose()


def deployment(world: OAuthWorld, store: OAuthStore, tmp_path: Path, redis_url: str,
               auth: dict[str, Any], **documented: str) -> Deployment:
    entry = {"url": world.mcp_url, "auth": {"type": "oauth", "description": "Your notes", **auth}}
    servers_file = tmp_path / "etc" / "mcp_servers.json"
    servers_file.parent.mkdir()
    servers_file.write_text(json.dumps({"servers": {"notes": entry}}))
    workdir = tmp_path / "operator"
    workdir.mkdir()
    server = accounts.OAuthServer(
        name="notes", url=world.mcp_url, description="Your notes",
        client_id_env=auth.get("client_id_env"), client_secret_env=auth.get("client_secret_env"))
    return Deployment(world, store, server, servers_file, workdir, {
        "MCP_SERVERS_FILE": str(servers_file),
        "REDIS_URL": redis_url,
        "TOKEN_SEALING_KEY": TEST_SEALING_KEY,
        "OAUTH_KEY_PREFIX": store.prefix,
        **documented,
    })


@contextmanager
def running(kind: str, store: OAuthStore, tmp_path: Path, redis_url: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """`registered`: onbehalf registered itself at the AS (RFC 7591) for the server's redirect
    URI. `preregistered`: a confidential client registered by hand, named in the servers
    file by variables."""
    if kind == "registered":
        with oauth_world() as world:
            yield deployment(world, store, tmp_path, redis_url, {})
        return
    names = {"client_id_env": "NOTES_CLIENT_ID", "client_secret_env": "NOTES_CLIENT_SECRET"}
    monkeypatch.setenv("NOTES_CLIENT_ID", TEST_CLIENT_ID)  # the server's environment has them
    monkeypatch.setenv("NOTES_CLIENT_SECRET", TEST_CLIENT_SECRET)
    with oauth_world(redirect_uri=f"{PUBLIC}/oauth/callback") as world:
        # `register_test_client` records the URI as AnyHttpUrl, which never equals the
        # AnyUrl the SDK's authorize handler compares it with: record it as AnyUrl
        client = world.provider.clients[TEST_CLIENT_ID]
        world.provider.clients[TEST_CLIENT_ID] = client.model_copy(
            update={"redirect_uris": [AnyUrl(f"{PUBLIC}/oauth/callback")]})
        yield deployment(world, store, tmp_path, redis_url, names,
                         NOTES_CLIENT_ID=TEST_CLIENT_ID, NOTES_CLIENT_SECRET=TEST_CLIENT_SECRET)


@pytest.fixture(params=["registered", "preregistered"])
def ops(request: pytest.FixtureRequest, store: OAuthStore, tmp_path: Path, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    with running(request.param, store, tmp_path, redis_url, monkeypatch) as deployed:
        yield deployed


@pytest.fixture
def registered(store: OAuthStore, tmp_path: Path, redis_url: str,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    with running("registered", store, tmp_path, redis_url, monkeypatch) as deployed:
        yield deployed


@pytest.fixture
def preregistered(store: OAuthStore, tmp_path: Path, redis_url: str,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    with running("preregistered", store, tmp_path, redis_url, monkeypatch) as deployed:
        yield deployed


def no_secret_in(world: OAuthWorld, tokens: StoredTokens, *outputs: bytes) -> None:
    secrets = {tokens.access_token, tokens.refresh_token, TEST_SEALING_KEY, TEST_CLIENT_SECRET,
               *world.seen_secrets}
    for output in outputs:
        text = output.decode()
        assert not [s for s in secrets if s and len(s) >= 8 and s in text], "a secret printed"


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("onbehalf: "), text
    return lines[0]


async def test_delete_forgets_and_revokes_with_only_the_documented_environment(
    ops: Deployment,
) -> None:
    tokens = await ops.connect("alice")
    registrations = ops.world.count("register")
    for browser_only in ("ONBEHALF_PUBLIC_URL", "OAUTH_CONFIRM_URL", "AUTH_JWT_SECRET"):
        assert browser_only not in ops.env()

    listed = await ops.onbehalf("list", "--as", "alice")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["connections"]
    assert entry["server"] == "notes" and entry["status"] == "connected"

    dropped = await ops.onbehalf("delete", "--as", "alice", "notes")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stderr == b""
    assert json.loads(dropped.stdout) == {"server": "notes", "status": "not_connected",
                                          "revoked_at_authorization_server": True}
    assert await ops.store.tokens("alice", "notes") is None
    assert (await accounts.connection_status("alice", ops.server))["status"] == "not_connected"
    assert ops.world.live_grants("alice") == 0, "the grant is still live at the AS"
    assert ops.world.count("revoke") >= 1
    assert ops.world.count("register") == registrations  # revoked as the client it was issued to

    after = await ops.onbehalf("list", "--as", "alice")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["connections"][0]["status"] == "not_connected"
    no_secret_in(ops.world, tokens, listed.stdout, listed.stderr, dropped.stdout,
                 dropped.stderr, after.stdout, after.stderr)


@pytest.mark.parametrize(("missing", "command"), [
    ("TOKEN_SEALING_KEY", "delete"),
    ("TOKEN_SEALING_KEY", "list"),
    ("MCP_SERVERS_FILE", "delete"),
    ("MCP_SERVERS_FILE", "list"),
])
async def test_a_missing_setting_is_one_line_naming_it_and_nothing_is_dropped(
    missing: str, command: str, registered: Deployment
) -> None:
    tokens = await registered.connect("alice")
    args = ["--as", "alice", *(["notes"] if command == "delete" else [])]
    answer = await registered.onbehalf(command, *args, env=registered.env(without=missing))
    assert answer.returncode == 1
    line = one_line(answer.stderr)
    assert missing in line and "not set" in line, line
    assert answer.stdout == b""
    assert await registered.store.tokens("alice", "notes") == tokens  # untouched
    assert registered.world.live_grants("alice") == 1
    no_secret_in(registered.world, tokens, answer.stdout, answer.stderr)


async def test_a_missing_client_secret_variable_is_named_and_the_grant_is_kept(
    preregistered: Deployment,
) -> None:
    tokens = await preregistered.connect("alice")
    env = preregistered.env(without="NOTES_CLIENT_SECRET")
    listed = await preregistered.onbehalf("list", "--as", "alice", env=env)  # needs no client
    assert listed.returncode == 0 and listed.stderr == b"", listed.stderr
    assert json.loads(listed.stdout)["connections"][0]["status"] == "connected"
    answer = await preregistered.onbehalf("delete", "--as", "alice", "notes", env=env)
    assert answer.returncode == 1
    line = one_line(answer.stderr)
    assert "NOTES_CLIENT_SECRET" in line and "not set" in line, line
    assert await preregistered.store.tokens("alice", "notes") == tokens
    assert preregistered.world.live_grants("alice") == 1
    no_secret_in(preregistered.world, tokens, answer.stdout, answer.stderr)


async def test_an_unreachable_redis_and_a_bad_key_are_one_line(registered: Deployment) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    down = await registered.onbehalf("list", "--as", "alice",
                                     env=registered.env(REDIS_URL=closed))
    assert down.returncode == 1
    assert "REDIS_URL" in one_line(down.stderr)
    bad = await registered.onbehalf("delete", "--as", "alice", "notes",
                                    env=registered.env(TOKEN_SEALING_KEY="not-a-key"))
    assert bad.returncode == 1
    assert "TOKEN_SEALING_KEY" in one_line(bad.stderr)
    unknown = await registered.onbehalf("delete", "--as", "alice", "nope")
    assert unknown.returncode == 1
    assert "nope" in one_line(unknown.stderr)
