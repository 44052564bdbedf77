"""The SSRF guard on every OAuth request whose URL a server chose (onbehalf/oauth/guard.py).

Resolution is stubbed (no DNS here) and the inner transport records what would
have been sent: a refused URL must never reach a socket.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from onbehalf.oauth import guard
from onbehalf.oauth.guard import GuardedTransport, OutboundRefused, check_url, fetch_json

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("url", "dev", "why"),
    [
        ("ftp://as.example/token", True, r"not an http\(s\) URL"),
        ("http://as.example/token", True, "is not https"),
        ("http://127.0.0.1:9000/token", False, "is not https"),
        ("http://localhost:9000/token", False, "is not https"),
        ("https://127.0.0.1/token", False, "loopback"),
        ("https://169.254.169.254/latest/meta-data", True, "link-local"),
        ("https://[fe80::1]/x", True, "link-local"),
        ("https://10.0.0.8/token", True, "private or reserved"),
        ("https://192.168.1.1/token", True, "private or reserved"),
        ("https://[::ffff:169.254.169.254]/x", True, "link-local"),
        ("https://0.0.0.0/x", True, "private or reserved"),
    ],
)
def test_check_url_refuses(url: str, dev: bool, why: str) -> None:
    with pytest.raises(OutboundRefused, match=why):
        check_url(url, dev=dev)


@pytest.mark.parametrize(
    ("url", "dev"),
    [
        ("https://as.example/token", False),
        ("https://93.184.215.14/token", False),
        ("http://127.0.0.1:9000/token", True),
        ("http://localhost:9000/token", True),
    ],
)
def test_check_url_allows(url: str, dev: bool) -> None:
    assert str(check_url(url, dev=dev)) == url


def test_a_refusal_never_echoes_the_query() -> None:
    with pytest.raises(OutboundRefused) as info:
        check_url("http://as.example/authorize?code=sekrit-code-1234", dev=False)
    assert "sekrit" not in str(info.value)
    with pytest.raises(OutboundRefused) as info:
        check_url("ftp://as.example/x?code=sekrit-code-1234", dev=True)
    assert "sekrit" not in str(info.value)


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, body: bytes = b'{"ok": true}') -> None:
        self.sent: list[httpx.Request] = []
        self.body = body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(200, content=self.body)


def guarded(monkeypatch: pytest.MonkeyPatch, answers: list[str], *, dev: bool
            ) -> tuple[GuardedTransport, Recorder]:
    async def fake_getaddrinfo(self: Any, host: str, port: int, **kwargs: Any) -> list[Any]:
        if not answers:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers]

    import asyncio

    monkeypatch.setattr(asyncio.get_running_loop().__class__, "getaddrinfo", fake_getaddrinfo)
    transport = GuardedTransport(dev=dev)
    recorder = Recorder()
    transport._inner = recorder  # type: ignore[assignment]
    return transport, recorder


@pytest.mark.parametrize(
    ("answers", "dev", "why"),
    [
        (["169.254.169.254"], True, "link-local"),
        (["10.1.2.3"], False, "private or reserved"),
        (["93.184.215.14", "10.1.2.3"], False, "private or reserved"),  # any answer counts
        (["127.0.0.1"], False, "loopback"),
        ([], True, "does not resolve"),
    ],
)
async def test_a_name_resolving_inside_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, answers: list[str], dev: bool, why: str
) -> None:
    transport, recorder = guarded(monkeypatch, answers, dev=dev)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OutboundRefused, match=why):
            await client.get("https://as.example/.well-known/oauth-authorization-server")
    assert recorder.sent == []


async def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the address that was checked is the one connected to (pinned)."""
    transport, recorder = guarded(monkeypatch, ["93.184.215.14"], dev=False)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://as.example/token")
    (sent,) = recorder.sent
    assert sent.url.host == "93.184.215.14"
    assert sent.extensions["sni_hostname"] == "as.example"  # TLS still checks the name
    assert sent.headers["host"] == "as.example"


async def test_localhost_is_refused_in_production_even_over_https(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport, recorder = guarded(monkeypatch, ["127.0.0.1"], dev=False)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OutboundRefused, match="loopback"):
            await client.get("https://localhost/token")
    assert recorder.sent == []


async def test_every_body_is_bounded_not_only_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile token endpoint cannot make Authlib (which reads it whole) exhaust memory."""
    monkeypatch.setattr(guard, "MAX_BODY_BYTES", 1024)
    transport, recorder = guarded(monkeypatch, ["93.184.215.14"], dev=False)
    recorder.body = b"x" * 5000
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OutboundRefused, match="more than 1024 bytes"):
            await client.post("https://as.example/token", data={"grant_type": "x"})
        recorder.body = b"{}"
        assert (await client.post("https://as.example/token")).json() == {}


def routed(routes: dict[str, httpx.Response]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return routes[str(request.url)]

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_fetch_json_follows_same_origin_redirects_only() -> None:
    same = routed({
        "https://as.example/a": httpx.Response(302, headers={"location": "/b"}),
        "https://as.example/b": httpx.Response(200, json={"issuer": "https://as.example"}),
    })
    async with same:
        assert await fetch_json(same, "https://as.example/a") == (200, {"issuer":
                                                                     "https://as.example"})
    away = routed({"https://as.example/a": httpx.Response(
        302, headers={"location": "https://169.254.169.254/"})})
    async with away:
        with pytest.raises(OutboundRefused, match="another origin"):
            await fetch_json(away, "https://as.example/a")
    loop = routed({"https://as.example/a": httpx.Response(302, headers={"location": "/a"})})
    async with loop:
        with pytest.raises(OutboundRefused, match="redirects more than"):
            await fetch_json(loop, "https://as.example/a")


async def test_fetch_json_refuses_an_oversized_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "MAX_BODY_BYTES", 1024)
    huge = routed({"https://as.example/m": httpx.Response(200, content=b"x" * 4096)})
    async with huge:
        with pytest.raises(OutboundRefused, match="more than"):
            await fetch_json(huge, "https://as.example/m")


async def test_fetch_json_not_json_or_not_200_is_none() -> None:
    client = routed({"https://as.example/html": httpx.Response(200, text="<html>"),
                     "https://as.example/gone": httpx.Response(404, json={"a": 1})})
    async with client:
        assert await fetch_json(client, "https://as.example/html") == (200, None)
        assert await fetch_json(client, "https://as.example/gone") == (404, None)
