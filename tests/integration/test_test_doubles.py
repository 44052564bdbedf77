"""The test doubles speak the real protocols, so tests built on them prove something.

- `run_token_exchange` is an RFC 8693 endpoint: it authenticates its client,
  verifies the subject token and mints an audience-bound token that a real
  tickets MCP server for that audience accepts, and one for another refuses.
- `run_apikey_mcp` is an MCP server that knows users only by their API keys,
  checks the key on every request and answers 401 once it is revoked.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.support.apikey_mcp import ApiKeyMcp, run_apikey_mcp
from tests.support.exchange_server import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_TYPE,
    ExchangeRecord,
    ExchangeServer,
    run_token_exchange,
)
from tests.support.mcp_server import (
    TicketsMcpServer,
    http_statuses,
    mcp_session,
    run_tickets_mcp,
    tool_data,
)
from tests.support.tokens import TEST_ISSUER, TEST_SECRET, mint

pytestmark = pytest.mark.anyio

CLIENT = ("onbehalf-agent", "exchange-secret")
TICKETS_AUDIENCE = "tickets-api"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ALICE_KEY, BOB_KEY = "ghk-alice-test", "ghk-bob-test"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def exchange_module() -> Iterator[ExchangeServer]:
    with run_token_exchange() as server:
        yield server


@pytest.fixture
def exchange(exchange_module: ExchangeServer) -> Iterator[ExchangeServer]:
    """The module's exchange endpoint, healthy and with an empty record for each test."""
    exchange_module.fail_mode = None
    exchange_module.exchanges.clear()
    yield exchange_module
    exchange_module.fail_mode = None


@pytest.fixture(scope="module")
def tickets_for_exchanged_tokens() -> Iterator[TicketsMcpServer]:
    """A tickets server that accepts only tokens issued for `tickets-api`."""
    with run_tickets_mcp(env={"AUTH_JWT_AUDIENCE": TICKETS_AUDIENCE}) as server:
        yield server


@pytest.fixture
def apikey_server() -> Iterator[ApiKeyMcp]:
    with run_apikey_mcp({ALICE_KEY: "alice", BOB_KEY: "bob"}) as server:
        yield server


def exchange_form(subject: str, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": JWT_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "audience": TICKETS_AUDIENCE,
        **overrides,
    }
    return {key: value for key, value in form.items() if value is not None}


async def post_exchange(
    server: ExchangeServer,
    form: dict[str, str],
    *,
    auth: tuple[str, str] | None = CLIENT,
    http_timeout: float = 5.0,
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=http_timeout) as client:
        return await client.post(server.token_url, data=form, auth=auth)


async def exchanged(server: ExchangeServer, subject: str, **overrides: str | None) -> str:
    response = await post_exchange(server, exchange_form(subject, **overrides))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def claims_of(token: str, audience: str = TICKETS_AUDIENCE) -> dict[str, object]:
    return jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience=audience,
                      issuer=TEST_ISSUER)


def rpc(method: str, params: dict[str, object] | None = None, id_: int = 1) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}


INITIALIZE = rpc("initialize", {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"},
})


def rpc_result(response: httpx.Response) -> dict[str, object]:
    """The JSON-RPC result of a response sent as JSON or as one SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        message = json.loads(data[-1])
    else:
        message = response.json()
    return message["result"]


# --- token exchange: success -----------------------------------------------------------------


async def test_exchange_mints_an_audience_bound_token_for_the_same_user(
    exchange: ExchangeServer,
) -> None:
    subject = mint("alice", ttl=600)
    response = await post_exchange(exchange, exchange_form(subject))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert 295 <= body["expires_in"] <= 300
    claims = claims_of(body["access_token"])
    subject_claims = claims_of(subject, audience="onbehalf-api")
    assert claims["sub"] == "alice"
    assert claims["iss"] == TEST_ISSUER
    assert claims["aud"] == TICKETS_AUDIENCE
    assert claims["act"] == {"sub": "onbehalf-agent"}
    assert claims["scope"] == subject_claims["scope"]
    assert claims["jti"] != subject_claims["jti"]
    assert isinstance(claims["exp"], int)
    assert claims["exp"] <= subject_claims["exp"]  # type: ignore[operator]
    assert body["access_token"] != subject
    assert exchange.exchanges == [
        ExchangeRecord("alice", TICKETS_AUDIENCE, resource=None, scope=claims["scope"])
    ]


async def test_exchanged_token_never_outlives_the_subject_token(exchange: ExchangeServer) -> None:
    subject = mint("alice", ttl=40)
    response = await post_exchange(exchange, exchange_form(subject))
    claims = claims_of(response.json()["access_token"])
    subject_exp = claims_of(subject, audience="onbehalf-api")["exp"]
    assert claims["exp"] == subject_exp
    assert response.json()["expires_in"] <= 40


async def test_requested_scope_and_resource_shape_the_new_token(exchange: ExchangeServer) -> None:
    token = await exchanged(
        exchange, mint("bob"), audience=None, resource="https://tickets.example/mcp",
        scope="tickets:read", subject_token_type=ACCESS_TOKEN_TYPE,
    )
    claims = claims_of(token, audience="https://tickets.example/mcp")
    assert claims["aud"] == "https://tickets.example/mcp"
    assert claims["scope"] == "tickets:read"
    assert exchange.exchanges == [
        ExchangeRecord("bob", None, "https://tickets.example/mcp", "tickets:read")
    ]


async def test_every_exchange_is_a_fresh_token(exchange: ExchangeServer) -> None:
    subject = mint("alice")
    first, second = await exchanged(exchange, subject), await exchanged(exchange, subject)
    assert first != second
    assert len(exchange.exchanges) == 2
    assert subject not in repr(exchange.exchanges)


# --- token exchange: refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [("onbehalf-agent", "wrong-secret"), ("someone-else", "exchange-secret"), None],
    ids=["wrong-secret", "unknown-client", "no-client-auth"],
)
async def test_client_must_authenticate(
    exchange: ExchangeServer, auth: tuple[str, str] | None
) -> None:
    response = await post_exchange(exchange, exchange_form(mint("alice")), auth=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert exchange.exchanges == []


BAD_SUBJECTS = {
    "exp": lambda: mint("alice", ttl=-120),
    "aud": lambda: mint("alice", audience="someone-else"),
    "iss": lambda: mint("alice", issuer="https://evil.example"),
    "signature": lambda: mint("alice", secret="another-secret-" + "y" * 32),
    "malformed": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("check", sorted(BAD_SUBJECTS))
async def test_a_subject_token_that_does_not_verify_is_invalid_grant(
    exchange: ExchangeServer, check: str
) -> None:
    subject = BAD_SUBJECTS[check]()
    response = await post_exchange(exchange, exchange_form(subject))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert f"[check: {check}]" in body["error_description"]
    assert subject not in response.text
    assert exchange.exchanges == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"subject_token": None}, "invalid_request"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "invalid_request"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"audience": None}, "invalid_target"),
    ],
    ids=["grant_type", "no-subject", "subject_token_type", "requested_token_type", "no-target"],
)
async def test_malformed_exchange_requests_are_400(
    exchange: ExchangeServer, overrides: dict[str, str | None], error: str
) -> None:
    response = await post_exchange(exchange, exchange_form(mint("alice"), **overrides))
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_a_json_body_is_not_a_token_request(exchange: ExchangeServer) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            exchange.token_url, json=exchange_form(mint("alice")), auth=CLIENT
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("mode", "status"),
    [("invalid_grant", 400), ("unauthorized_client", 400), ("server_error", 500)],
)
async def test_fail_modes_answer_like_a_failing_authorization_server(
    exchange: ExchangeServer, mode: str, status: int
) -> None:
    exchange.fail_mode = mode  # type: ignore[assignment]
    response = await post_exchange(exchange, exchange_form(mint("alice")))
    assert response.status_code == status
    assert response.json()["error"] == mode
    assert exchange.exchanges == []
    exchange.fail_mode = None
    assert (await post_exchange(exchange, exchange_form(mint("alice")))).status_code == 200


async def test_hang_outlasts_the_client_timeout_but_not_the_shutdown() -> None:
    with run_token_exchange() as hanging:
        hanging.fail_mode = "hang"
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await post_exchange(hanging, exchange_form(mint("alice")), http_timeout=0.5)
        assert time.monotonic() - started < 2
        assert hanging.requests == 1
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3


# --- exchanged tokens at a real resource server ----------------------------------------------


async def test_exchanged_token_is_accepted_by_a_tickets_server_for_its_audience(
    exchange: ExchangeServer, tickets_for_exchanged_tokens: TicketsMcpServer
) -> None:
    token = await exchanged(exchange, mint("alice"))
    async with mcp_session(tickets_for_exchanged_tokens.url, token) as session:
        me = tool_data(await session.call_tool("whoami", {}))
    assert me["sub"] == "alice"
    assert me["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()


async def test_the_users_own_token_is_refused_where_an_exchanged_one_is_needed(
    tickets_for_exchanged_tokens: TicketsMcpServer,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            tickets_for_exchanged_tokens.url,
            json=INITIALIZE,
            headers={**MCP_HEADERS, "Authorization": f"Bearer {mint('alice')}"},
        )
    assert response.status_code == 401
    assert response.json()["check"] == "aud"


async def test_exchanged_token_is_refused_by_a_server_for_another_audience(
    exchange: ExchangeServer, tickets_mcp_server: TicketsMcpServer
) -> None:
    token = await exchanged(exchange, mint("alice"))
    with pytest.raises(BaseException) as caught:
        async with mcp_session(tickets_mcp_server.url, token):
            pass
    assert 401 in http_statuses(caught.value)


# --- the API-key MCP server ------------------------------------------------------------------


async def test_a_known_key_acts_as_its_user(apikey_server: ApiKeyMcp) -> None:
    async with mcp_session(apikey_server.url, ALICE_KEY) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        me = tool_data(await session.call_tool("whoami", {}))
        repos = tool_data(await session.call_tool("list_repos", {}))
    assert tools == {"whoami", "list_repos"}
    assert me == {"as_user": "alice", "key_sha256": hashlib.sha256(ALICE_KEY.encode()).hexdigest()}
    assert repos == {"as_user": "alice", "repos": ["alice/project-a", "alice/dotfiles"]}
    assert apikey_server.tool_calls == 2


@pytest.mark.parametrize(
    "authorization", [None, "Bearer ghk-nobody", f"Basic {ALICE_KEY}", "Bearer"],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
async def test_a_missing_or_unknown_key_is_401(
    apikey_server: ApiKeyMcp, authorization: str | None
) -> None:
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(apikey_server.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "invalid_token"
    assert apikey_server.sessions_opened == 0


async def test_a_key_revoked_mid_session_is_refused_on_the_next_request(
    apikey_server: ApiKeyMcp,
) -> None:
    with pytest.raises(BaseException) as caught:
        async with mcp_session(apikey_server.url, ALICE_KEY) as session:
            assert tool_data(await session.call_tool("whoami", {}))["as_user"] == "alice"
            del apikey_server.keys[ALICE_KEY]
            await session.call_tool("whoami", {})
    assert 401 in http_statuses(caught.value)
    assert apikey_server.tool_calls == 1


async def test_identity_comes_from_the_key_of_each_request(apikey_server: ApiKeyMcp) -> None:
    alice = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE_KEY}"}
    bob = {**MCP_HEADERS, "Authorization": f"Bearer {BOB_KEY}"}
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(apikey_server.url, json=INITIALIZE, headers=alice)
        assert opened.status_code == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        await client.post(
            apikey_server.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={**alice, **session},
        )
        called = await client.post(
            apikey_server.url,
            json=rpc("tools/call", {"name": "whoami", "arguments": {}}, id_=2),
            headers={**bob, **session},
        )
        closed = await client.delete(apikey_server.url, headers={**bob, **session})
    assert rpc_result(called)["structuredContent"] == {
        "as_user": "bob", "key_sha256": hashlib.sha256(BOB_KEY.encode()).hexdigest(),
    }
    assert closed.status_code == 200


async def test_sessions_are_counted_when_opened_and_closed(apikey_server: ApiKeyMcp) -> None:
    async with mcp_session(apikey_server.url, BOB_KEY) as session:
        await session.call_tool("list_repos", {})
        assert (apikey_server.sessions_opened, apikey_server.sessions_active) == (1, 1)
    assert (apikey_server.sessions_opened, apikey_server.sessions_active) == (1, 0)


async def test_a_custom_header_carries_the_raw_key() -> None:
    with run_apikey_mcp({"raw-key-1": "carol"}, header="X-Api-Key", scheme=None) as server:
        async with httpx.AsyncClient(timeout=10) as client:
            refused = await client.post(
                server.url, json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": "Bearer raw-key-1"},
            )
            accepted = await client.post(
                server.url, json=INITIALIZE, headers={**MCP_HEADERS, "X-Api-Key": "raw-key-1"}
            )
    assert refused.status_code == 401
    assert accepted.status_code == 200
    assert server.sessions_opened == 1
