"""Hostile credentials against a real `langgraph dev`: every one is a 401 naming its check.

Each refusal must be a 401 whose JSON `detail` ends with `[check: <name>]`,
never a 500, and never echo the credential (whole, or its signature). The
HS256 cases run against the security session's server; the JWKS cases
against a second server that trusts only RS256 keys from a local identity
provider (`tests.support.jwks`), whose endpoint is also made to hang, answer
garbage, fail and disappear.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from onbehalf.jwt_auth import MAX_TOKEN_BYTES
from onbehalf.settings import AuthSettings
from tests.security.forge import DROP, claims, forge, segment
from tests.security.probes import (
    AS_USER,
    FIGURES,
    client_for,
    final_text,
    say,
    scan,
    sha256,
)
from tests.support.jwks import JwksServer, SigningKey, mint_es256, mint_rs256
from tests.support.langgraph_server import LangGraphServer, run_langgraph_dev
from tests.support.tokens import mint

pytestmark = pytest.mark.anyio

PROBE = "/threads/search"
"""A read-only endpoint that needs a user: what every hostile credential is sent to."""

OTHER_SECRET = "not-the-servers-secret-" + "z" * 32


@dataclass(frozen=True)
class Hostile:
    name: str
    authorization: Callable[[], str | None]
    check: str


def port_of(server: LangGraphServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def bearer(token: str) -> str:
    return f"Bearer {token}"


def _tampered() -> str:
    """Alice's signature on a payload that says bob."""
    header, _, signature = mint("alice").split(".")
    return f"{header}.{segment(claims(sub='bob'))}.{signature}"


def _rs256_token() -> str:
    return mint_rs256(SigningKey.generate("stray"))


HS256_CASES = [
    Hostile("no_header", lambda: None, "authorization_header"),
    Hostile("empty_header", lambda: "", "authorization_header"),
    Hostile("whitespace_header", lambda: "   \t ", "authorization_header"),
    Hostile("basic_scheme", lambda: "Basic YWxpY2U6cGFzc3dvcmQ=", "authorization_scheme"),
    Hostile("token_scheme", lambda: f"Token {mint('alice')}", "authorization_scheme"),
    Hostile("jwt_without_scheme", lambda: mint("alice"), "authorization_scheme"),
    Hostile("empty_bearer", lambda: "Bearer", "bearer_empty"),
    Hostile("bearer_and_spaces", lambda: "Bearer     ", "bearer_empty"),
    Hostile("garbage", lambda: "Bearer !!definitely~not~a~token!!", "malformed"),
    Hostile("two_dots_not_base64", lambda: "Bearer a$b.c%d.e^f", "malformed"),
    Hostile("two_dots_base64_not_json", lambda: "Bearer abcd.efgh.ijkl", "malformed"),
    Hostile("four_segments", lambda: bearer(mint("alice") + ".extra"), "malformed"),
    Hostile("header_is_a_list", lambda: bearer(forge(claims(), ["HS256"])), "malformed"),
    Hostile("payload_is_a_list", lambda: bearer(forge(["alice"])), "malformed"),
    Hostile("payload_not_json", lambda: bearer(forge("{not json")), "malformed"),
    Hostile("alg_none", lambda: bearer(forge(claims(), {"alg": "none"}, key=None)),
            "algorithm"),
    Hostile("alg_None_mixed_case", lambda: bearer(forge(claims(), {"alg": "NoNe"}, key=None)),
            "algorithm"),
    Hostile("alg_missing", lambda: bearer(forge(claims(), {"typ": "JWT"})), "algorithm"),
    Hostile("alg_not_a_string", lambda: bearer(forge(claims(), {"alg": ["HS256"]})),
            "algorithm"),
    Hostile("alg_hs512_not_allowed",
            lambda: bearer(forge(claims(), {"alg": "HS512"}, digest=hashlib.sha512)),
            "algorithm"),
    Hostile("rs256_on_an_hs256_server", lambda: bearer(_rs256_token()), "algorithm"),
    Hostile("bad_signature", lambda: bearer(mint("alice", secret=OTHER_SECRET)), "signature"),
    Hostile("tampered_payload", lambda: bearer(_tampered()), "signature"),
    Hostile("signature_stripped", lambda: bearer(forge(claims(), key=None)), "signature"),
    Hostile("expired", lambda: bearer(mint("alice", ttl=-120)), "exp"),
    Hostile("exp_missing", lambda: bearer(forge(claims(exp=DROP))), "exp"),
    Hostile("exp_not_a_number", lambda: bearer(forge(claims(exp="tomorrow"))), "exp"),
    Hostile("exp_nan", lambda: bearer(forge(json.dumps(claims(exp=float("nan"))))), "exp"),
    Hostile("nbf_in_the_future", lambda: bearer(mint("alice", nbf=int(time.time()) + 3600)),
            "nbf"),
    Hostile("nbf_not_a_number", lambda: bearer(forge(claims(nbf="soon"))), "nbf"),
    Hostile("iat_in_the_future", lambda: bearer(mint("alice", iat=int(time.time()) + 3600)),
            "iat"),
    Hostile("iat_not_a_number", lambda: bearer(forge(claims(iat="now"))), "iat"),
    Hostile("wrong_iss", lambda: bearer(mint("alice", issuer="https://evil.example")), "iss"),
    Hostile("missing_iss", lambda: bearer(mint("alice", issuer=None)), "iss"),
    Hostile("wrong_aud", lambda: bearer(mint("alice", audience="someone-else")), "aud"),
    Hostile("missing_aud", lambda: bearer(mint("alice", audience=None)), "aud"),
    Hostile("missing_sub", lambda: bearer(forge(claims(sub=DROP))), "sub"),
    Hostile("empty_sub", lambda: bearer(mint("")), "sub"),
    Hostile("blank_sub", lambda: bearer(mint("   ")), "sub"),
    Hostile("sub_is_a_number", lambda: bearer(mint(12345)), "sub"),
    Hostile("sub_is_a_list", lambda: bearer(mint(["alice"])), "sub"),
    Hostile("oversized_9kb", lambda: bearer(mint("alice", padding="p" * 9 * 1024)),
            "token_size"),
]


def secret_forms(authorization: str | None) -> list[str]:
    """What must never come back: the credential, its token, and the token's signature."""
    if not authorization or not authorization.strip():
        return []
    token = authorization.split()[-1]
    forms = [authorization.strip(), token]
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 16:
        forms.append(signature)
    return [f for f in forms if len(f) >= 16]


async def send(server: LangGraphServer, authorization: str | None) -> httpx.Response:
    """POST the probe with this Authorization value (None: no header at all)."""
    if authorization is not None and authorization != authorization.strip():
        # httpx refuses surrounding whitespace in a header value; send the bytes ourselves.
        status, raw = await asyncio.to_thread(
            raw_request, port_of(server), authorization.encode()
        )
        assert status is not None, "the server hung up without an answer"
        return httpx.Response(status, content=raw.partition(b"\r\n\r\n")[2])
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post(PROBE, json={}, headers=headers)


def assert_refused(response: httpx.Response, check: str, authorization: str | None) -> None:
    """401, a JSON detail naming `check`, and nothing of the credential echoed back."""
    FIGURES["hostile_credentials"] += 1
    forms = secret_forms(authorization)
    for form in forms:
        assert form not in response.text, f"the credential was echoed in the {check} refusal"
    assert response.status_code == 401, (check, response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(f"[check: {check}]"), detail


@pytest.mark.parametrize("case", HS256_CASES, ids=lambda c: c.name)
async def test_hostile_credential_is_a_401_naming_its_check(
    langgraph_server: LangGraphServer, case: Hostile
) -> None:
    authorization = case.authorization()
    assert_refused(await send(langgraph_server, authorization), case.check, authorization)


async def test_a_valid_token_passes_the_same_probe(langgraph_server: LangGraphServer) -> None:
    """Positive control: the probe itself is not what refuses the hostile credentials."""
    for authorization in (bearer(mint("alice")), f"  bEaReR   {mint('alice')}  "):
        response = await send(langgraph_server, authorization)
        assert response.status_code == 200, response.text[:300]


async def test_unicode_claims_are_accepted_end_to_end(langgraph_server: LangGraphServer) -> None:
    sub = "zoë-日本-🚀"
    token = mint(sub, name="Zoë Ünïcødé 😀")
    FIGURES["hostile_credentials"] += 1
    assert (await send(langgraph_server, bearer(token))).status_code == 200
    client = client_for(langgraph_server.url, token)
    thread = await client.threads.create()
    state = await client.runs.wait(thread["thread_id"], "assistant", input=say("whoami"))
    text = final_text(state["messages"])
    assert AS_USER.search(text) and AS_USER.search(text).group(1) == sub, text
    assert sha256(token) in text


async def test_a_9kb_token_gets_our_token_size_refusal(langgraph_server: LangGraphServer) -> None:
    token = mint("alice", padding="p" * 9 * 1024)
    assert len(token) > MAX_TOKEN_BYTES
    assert_refused(await send(langgraph_server, bearer(token)), "token_size", bearer(token))


async def test_a_64kb_token_is_refused_without_a_500(langgraph_server: LangGraphServer) -> None:
    """Our limit, or the HTTP parser's own header limit (400/431) before auth: both are 4xx."""
    token = mint("alice", padding="p" * 64 * 1024)
    FIGURES["hostile_credentials"] += 1
    response = await send(langgraph_server, bearer(token))
    assert 400 <= response.status_code < 500, response.status_code
    if response.status_code == 401:
        assert response.json()["detail"].endswith("[check: token_size]")
    assert token.rsplit(".", 1)[1] not in response.text


RAW_INJECTIONS = {
    "nul": b"\x00",
    "bare_lf": b"\n",
    "bare_cr": b"\r",
    "crlf_header_injection": b"\r\nX-Injected: 1\r\n",
    "obs_fold": b"\r\n ",
    "del": b"\x7f",
    "latin1_high_byte": b"\xff",
}


def raw_request(port: int, authorization: bytes, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Send bytes httpx would refuse; the status line's code (None if the server hung up)."""
    request = (
        b"POST " + PROBE.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + authorization + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    if not response.startswith(b"HTTP/1.1 "):
        return None, response
    return int(response[9:12]), response


@pytest.mark.parametrize("injection", list(RAW_INJECTIONS), ids=str)
async def test_control_characters_in_the_token_are_a_4xx(
    langgraph_server: LangGraphServer, injection: str
) -> None:
    token = mint("alice")
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    mangled = (head + "." + signature[:middle]).encode() + RAW_INJECTIONS[injection] + \
        signature[middle:].encode()
    FIGURES["hostile_credentials"] += 1
    status, response = await asyncio.to_thread(
        raw_request, port_of(langgraph_server), b"Bearer " + mangled
    )
    for piece in (token, head, signature[:middle], signature[middle:]):
        assert piece.encode() not in response, f"part of the token was echoed ({injection})"
    assert status is not None, f"the server hung up without an answer ({injection})"
    assert 400 <= status < 500, (injection, status, response[:300])


async def test_a_valid_token_replayed_after_expiry_is_refused(
    langgraph_server: LangGraphServer,
) -> None:
    """Accepted while inside the leeway (5 s in the tests), refused once past it."""
    leeway = AuthSettings().auth_leeway_seconds
    token = mint("alice", ttl=-2)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    first = await send(langgraph_server, bearer(token))
    assert first.status_code == 200, first.text[:300]
    await asyncio.sleep(max(0.0, expires_at + leeway + 1.0 - time.time()))
    assert_refused(await send(langgraph_server, bearer(token)), "exp", bearer(token))


# --- sealed tokens: ciphertext copied out of a run record ---------------------------------


async def _alices_sealed_user(server: LangGraphServer) -> tuple[str, dict[str, Any]]:
    alice = client_for(server.url, mint("alice"))
    thread = await alice.threads.create()
    run = await alice.runs.create(thread["thread_id"], "assistant", input=say("whoami"))
    await alice.runs.join(thread["thread_id"], run["run_id"])
    record = await alice.runs.get(thread["thread_id"], run["run_id"])
    user = record["kwargs"]["config"]["configurable"]["langgraph_auth_user"]
    assert user["identity"] == "alice" and user["sealed_token"].startswith("v1."), user.keys()
    return user["sealed_token"], user


async def test_a_sealed_token_never_authenticates(langgraph_server: LangGraphServer) -> None:
    sealed, _ = await _alices_sealed_user(langgraph_server)
    attempts = {
        "as bearer": ({"Authorization": bearer(sealed)}, "malformed"),
        "as the bare header": ({"Authorization": sealed}, "authorization_scheme"),
        "as x-sealed-token": ({"X-Sealed-Token": sealed}, "authorization_header"),
        "as x-api-key": ({"X-Api-Key": sealed}, "authorization_header"),
        "as a cookie": ({"Cookie": f"sealed_token={sealed}"}, "authorization_header"),
        "as x-langgraph-auth-user": (
            {"X-Langgraph-Auth-User": json.dumps({"identity": "alice", "sealed_token": sealed})},
            "authorization_header",
        ),
    }
    async with httpx.AsyncClient(base_url=langgraph_server.url, timeout=30) as http:
        for name, (headers, check) in attempts.items():
            response = await http.post(PROBE, json={}, headers=headers)
            assert response.status_code == 401, name
            assert response.json()["detail"].endswith(f"[check: {check}]"), name
            assert sealed not in response.text, name
            FIGURES["hostile_credentials"] += 1


async def _outcome(client: Any, thread_id: str, **run_kwargs: Any) -> tuple[str, str]:
    """('refused', status) when the server refuses the request, else (run status, answer)."""
    try:
        run = await client.runs.create(thread_id, **run_kwargs)
    except httpx.HTTPStatusError as exc:
        return "refused", str(exc.response.status_code)
    await client.runs.join(thread_id, run["run_id"])
    record = await client.runs.get(thread_id, run["run_id"])
    state = await client.threads.get_state(thread_id)
    messages = (state.get("values") or {}).get("messages") or []
    return record["status"], final_text(messages)


async def test_bob_cannot_make_a_run_use_alices_sealed_token(
    langgraph_server: LangGraphServer,
) -> None:
    sealed, alice_user = await _alices_sealed_user(langgraph_server)
    bob_token = mint("bob")
    bob = client_for(langgraph_server.url, bob_token, **{"X-Sealed-Token": sealed})
    forged_user = {**alice_user, "identity": "bob"}  # bob's identity, alice's ciphertext
    base = {"assistant_id": "assistant", "input": say("whoami")}
    attempts: dict[str, dict[str, Any]] = {
        "alongside bob's own bearer": {},
        "configurable.langgraph_auth_user": {
            "config": {"configurable": {"langgraph_auth_user": alice_user}}},
        "context.langgraph_auth_user": {"context": {"langgraph_auth_user": alice_user}},
        "relabelled as bob": {"config": {"configurable": {"langgraph_auth_user": forged_user}}},
        "context.user_token": {"context": {"user_token": sealed}},
        "context.sealed_token": {"context": {"sealed_token": sealed, "identity": "alice"}},
        "configurable._user_token": {"config": {"configurable": {"_user_token": sealed}}},
    }
    assistant = await bob.assistants.create(
        "assistant", context={"sealed_token": sealed, "langgraph_auth_user": alice_user}
    )
    attempts["bob's assistant carrying it"] = {"assistant_id": assistant["assistant_id"]}
    outcomes = {}
    for name, extra in attempts.items():
        thread = await bob.threads.create()
        status, text = await _outcome(bob, thread["thread_id"], **{**base, **extra})
        outcomes[name] = status
        FIGURES["sealed_token_replays"] += 1
        assert "as_user: alice" not in text, f"{name}: bob's run acted as alice"
        assert "T-1001" not in text and "T-1003" not in text, name
        if status == "success":
            assert "as_user: bob" in text and sha256(bob_token) in text, (name, text[:200])
    # Positive control: the plain attempt did run, as bob.
    assert outcomes["alongside bob's own bearer"] == "success"


# --- a second server: RS256 keys from a local JWKS endpoint -------------------------------


@dataclass
class JwksEdge:
    server: LangGraphServer
    jwks: JwksServer
    key: SigningKey
    outages: dict[str, tuple[int, str, float]]


def _probe_sync(url: str, token: str) -> tuple[int, str, float]:
    started = time.monotonic()
    response = httpx.post(f"{url}{PROBE}", json={}, headers={"Authorization": bearer(token)},
                          timeout=60)
    return response.status_code, response.text, time.monotonic() - started


@pytest.fixture(scope="module")
def jwks_edge() -> Iterator[JwksEdge]:
    """Start cold: the identity provider hangs, answers garbage, fails, is down, then recovers.

    Every outage is probed while the key cache is still empty (PyJWKClient keeps a
    fetched key set for five minutes, so a warm cache rightly hides an outage).
    """
    key = SigningKey.generate("key-2026")
    jwks = JwksServer([key]).start()
    jwks.mode = "hang"
    env = {"AUTH_JWKS_URL": jwks.url, "AUTH_JWT_ALGORITHMS": "RS256", "AUTH_JWT_SECRET": ""}
    try:
        with run_langgraph_dev(env, n_jobs=4) as server:
            outages = {"hang": _probe_sync(server.url, mint_rs256(key))}
            jwks.mode = "garbage"
            outages["garbage"] = _probe_sync(server.url, mint_rs256(key))
            jwks.mode = "error"
            outages["error_503"] = _probe_sync(server.url, mint_rs256(key))
            jwks.stop()
            outages["down"] = _probe_sync(server.url, mint_rs256(key))
            jwks.mode = "serve"
            jwks.start()
            yield JwksEdge(server, jwks, key, outages)
    finally:
        jwks.stop()


@pytest.mark.parametrize("outage", ["hang", "garbage", "error_503", "down"])
def test_an_unreachable_identity_provider_is_a_bounded_401(
    jwks_edge: JwksEdge, outage: str
) -> None:
    status, body, seconds = jwks_edge.outages[outage]
    FIGURES["hostile_credentials"] += 1
    assert status == 401, (outage, status, body[:300])
    assert json.loads(body)["detail"].endswith("[check: jwks_unavailable]"), body
    assert seconds < 15, f"{outage}: the refusal took {seconds:.1f}s"


def _hs256_signed_with_the_public_key(key: SigningKey) -> str:
    return forge(claims(), {"alg": "HS256", "kid": key.kid}, key=key.public_pem())


JWKS_CASES: list[tuple[str, Callable[[SigningKey], str], str]] = [
    ("unknown_kid", lambda k: mint_rs256(k, kid="kid-nobody-published"), "kid"),
    ("missing_kid", lambda k: jwt.encode(claims(), k.private_key, algorithm="RS256"), "kid"),
    ("hs256_signed_with_the_public_key", _hs256_signed_with_the_public_key, "algorithm"),
    ("alg_none_with_a_known_kid",
     lambda k: forge(claims(), {"alg": "none", "kid": k.kid}, key=None), "algorithm"),
    ("es256_not_allowed", lambda k: mint_es256(kid=k.kid), "algorithm"),
    ("rs512_not_allowed",
     lambda k: jwt.encode(claims(), k.private_key, algorithm="RS512", headers={"kid": k.kid}),
     "algorithm"),
    ("hs256_with_the_empty_secret",
     lambda k: forge(claims(), key=""), "algorithm"),
    ("signed_by_an_unpublished_key_under_a_known_kid",
     lambda k: mint_rs256(SigningKey.generate(), kid=k.kid), "signature"),
    ("expired_rs256", lambda k: mint_rs256(k, ttl=-120), "exp"),
    ("wrong_aud_rs256", lambda k: mint_rs256(k, audience="someone-else"), "aud"),
    ("rs256_without_sub", lambda k: mint_rs256(k, sub=None), "sub"),
]


@pytest.mark.parametrize(("name", "make", "check"), JWKS_CASES, ids=[c[0] for c in JWKS_CASES])
async def test_hostile_rs256_credential_is_a_401_naming_its_check(
    jwks_edge: JwksEdge, name: str, make: Callable[[SigningKey], str], check: str
) -> None:
    authorization = bearer(make(jwks_edge.key))
    assert_refused(await send(jwks_edge.server, authorization), check, authorization)


async def test_a_valid_rs256_token_from_the_jwks_is_accepted(jwks_edge: JwksEdge) -> None:
    """Positive control for the JWKS server (and proof that it recovered after the outage)."""
    response = await send(jwks_edge.server, bearer(mint_rs256(jwks_edge.key)))
    assert response.status_code == 200, response.text[:300]


def test_an_empty_secret_setting_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`subprocess_env` sets a secret; the JWKS server above overrides it with ''."""
    monkeypatch.setenv("AUTH_JWT_SECRET", "")
    monkeypatch.setenv("AUTH_JWKS_URL", "http://127.0.0.1:9/jwks.json")
    monkeypatch.setenv("AUTH_JWT_ALGORITHMS", "RS256")
    assert AuthSettings().auth_jwt_secret is None
    monkeypatch.setenv("AUTH_JWT_ALGORITHMS", "RS256,HS256")
    with pytest.raises(ValueError, match="AUTH_JWT_SECRET"):
        AuthSettings()


# --- nothing of a hostile credential reaches the server's log -----------------------------


async def test_hostile_credentials_never_reach_the_server_log(
    langgraph_server: LangGraphServer,
) -> None:
    sent = [case.authorization() for case in HS256_CASES]
    for authorization in sent:
        await send(langgraph_server, authorization)
    tokens = [
        token for token in (a.split()[-1] for a in sent if a and a.strip())
        if token.count(".") == 2 and len(token.rsplit(".", 1)[-1]) >= 20
    ]
    assert len(tokens) >= 20, "too few JWT-shaped hostile tokens to make the scan meaningful"
    log = langgraph_server.log_text()
    assert "/threads/search" in log, "the server log does not show the probes: wrong file?"
    assert scan("server log", log, tokens) == []

