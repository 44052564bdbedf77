"""Token-bearing request headers never become run configuration, checkpoints or log lines.

langgraph-api copies request headers into `config["configurable"]` when
`http.configurable_headers.includes` matches them, and from there every string
lands in checkpoint metadata. Our langgraph.json ships `excludes` for
token-bearing names, and excludes win over includes. This module proves it the
way a deployer would break it: a `langgraph dev` whose langgraph.json is ours
plus `"includes": ["x-*"]` (and, for the log, `logging_headers` including
every header). Each token-bearing header carries its own JWT; the harmless
`x-org-id: acme` must be copied (so the includes demonstrably work) and every
JWT must be absent from run records, thread records, state, history and
`.langgraph_api/` — and from the server's log.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.security.probes import FIGURES, as_json, client_for, say, scan
from tests.support.langgraph_server import PROJECT_ROOT, run_langgraph_dev
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import mint

HARMLESS = ("x-org-id", "acme")
"""Copied when includes match. (`x-tenant-id` would not do: langgraph-api never copies it.)"""

TOKEN_HEADERS = [
    "x-access-token",            # the caller's own JWT, as some gateways forward it
    "x-supabase-access-token",   # another JWT (Supabase's documented header)
    "x-forwarded-access-token",  # oauth2-proxy
    "x-auth-request-access-token",
    "x-id-token",
    "x-refresh-token",
    "x-ms-token-aad-id-token",   # Azure App Service authentication
    "x-amzn-oidc-accesstoken",   # AWS ALB authentication
    "x-amzn-oidc-data",          # AWS ALB: the user's claims as a signed JWT
    "x-goog-iap-jwt-assertion",  # Google IAP: a signed JWT on every request
    "x-jwt-assertion",           # WSO2 API gateway
    "x-client-secret",
    "x-session-jwt",
]


@dataclass
class HeaderScenario:
    caller_token: str
    header_tokens: dict[str, str]
    read_backs: list[Any] = field(default_factory=list)
    run_configurable: dict[str, Any] = field(default_factory=dict)
    checkpoint_metadata: list[dict[str, Any]] = field(default_factory=list)
    state_files: list[Path] = field(default_factory=list)
    server_log: str = ""


def deployer_langgraph_json(workdir: Path) -> None:
    """Our langgraph.json plus what a deployer adds: copy x-* headers, log every header."""
    config = json.loads((PROJECT_ROOT / "langgraph.json").read_text())
    http = config.setdefault("http", {})
    http.setdefault("configurable_headers", {})["includes"] = ["x-*"]
    http.setdefault("logging_headers", {})["includes"] = ["*"]
    assert http["configurable_headers"]["excludes"], "our excludes must stay in place"
    (workdir / "langgraph.json").write_text(json.dumps(config, indent=2))


async def _drive(url: str, scenario: HeaderScenario) -> None:
    headers = {name: token for name, token in scenario.header_tokens.items()}
    headers[HARMLESS[0]] = HARMLESS[1]
    client = client_for(url, scenario.caller_token, **headers)
    thread = await client.threads.create(metadata={"purpose": "headers"})
    tid = thread["thread_id"]
    run = await client.runs.create(tid, "assistant", input=say("whoami"))
    await client.runs.join(tid, run["run_id"])
    await client.runs.wait(tid, "assistant", input=say("list_tickets"))
    await client.threads.update_state(tid, {"messages": [{"role": "user", "content": "hi"}]})
    stateless = await client.runs.wait(None, "thread_title", input=say("headers everywhere"))
    record = await client.runs.get(tid, run["run_id"])
    history = await client.threads.get_history(tid, limit=100)
    scenario.run_configurable = record["kwargs"]["config"]["configurable"]
    scenario.checkpoint_metadata = [h["metadata"] for h in history]
    scenario.read_backs += [
        record, await client.runs.list(tid), await client.threads.get(tid),
        await client.threads.search(), await client.threads.get_state(tid), history, stateless,
    ]


@pytest.fixture(scope="module")
def header_scenario(
    tickets_mcp_server: TicketsMcpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HeaderScenario]:
    workdir = tmp_path_factory.mktemp("deployer-headers")
    deployer_langgraph_json(workdir)
    caller = mint("alice")
    header_tokens = {name: mint(f"someone-{i}", secret=f"idp-{uuid.uuid4().hex}" * 2)
                     for i, name in enumerate(TOKEN_HEADERS)}
    header_tokens["x-access-token"] = caller  # the caller's own, valid JWT
    scenario = HeaderScenario(caller, header_tokens)
    servers = {"servers": {"tickets": {"url": tickets_mcp_server.url}}}
    with run_langgraph_dev({"MCP_SERVERS": json.dumps(servers)}, workdir=workdir) as server:
        asyncio.run(_drive(server.url, scenario))
        server.stop()
        scenario.state_files = server.written_files()
        scenario.server_log = server.log_text()
    yield scenario


def test_the_deployers_includes_do_copy_a_harmless_header(
    header_scenario: HeaderScenario,
) -> None:
    """Positive control: includes work, so the absences below are not an accident."""
    name, value = HARMLESS
    assert header_scenario.run_configurable.get(name) == value
    assert any(m.get(name) == value for m in header_scenario.checkpoint_metadata)
    assert any(value.encode() in p.read_bytes() for p in header_scenario.state_files)


@pytest.mark.parametrize("header", TOKEN_HEADERS)
def test_a_token_header_never_reaches_configuration_or_storage(
    header_scenario: HeaderScenario, header: str
) -> None:
    token = header_scenario.header_tokens[header]
    # Compare names only: an assertion message must never print the token itself.
    copied = [key for key in header_scenario.run_configurable if key == header]
    assert not copied, f"{header} was copied into the run's configurable"
    in_metadata = [key for m in header_scenario.checkpoint_metadata for key in m if key == header]
    assert not in_metadata, f"{header} was copied into checkpoint metadata"
    hits = scan(f"read-backs ({header})", as_json(header_scenario.read_backs), [token])
    for path in header_scenario.state_files:
        hits += scan(f"{path.name} ({header})", path.read_bytes(), [token])
    FIGURES["token_headers_checked"] += 1
    assert hits == []


def test_the_authorization_token_never_reaches_configuration_or_storage(
    header_scenario: HeaderScenario,
) -> None:
    assert not [k for k in header_scenario.run_configurable if k.lower() == "authorization"]
    hits = scan("read-backs (authorization)", as_json(header_scenario.read_backs),
                [header_scenario.caller_token])
    for path in header_scenario.state_files:
        hits += scan(path.name, path.read_bytes(), [header_scenario.caller_token])
    assert hits == []


@pytest.mark.parametrize("header", TOKEN_HEADERS)
def test_a_token_header_never_reaches_the_log_even_when_headers_are_logged(
    header_scenario: HeaderScenario, header: str
) -> None:
    log = header_scenario.server_log
    assert "x-org-id" in log, "the deployer's logging_headers did not take effect"
    assert scan(f"server log ({header})", log, [header_scenario.header_tokens[header]]) == []
