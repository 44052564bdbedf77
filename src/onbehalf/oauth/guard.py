"""Outbound requests whose URL someone else chose: metadata, token, registration, revocation.

An MCP server names its authorization server and that server names its
endpoints; a hostile or compromised one could point onbehalf at
`http://169.254.169.254/` (cloud metadata) or an address inside the
deployment. Every OAuth request therefore goes through `GuardedTransport`:

- https only; plain http only to loopback, and only outside production;
- every address the host resolves to must be public (loopback allowed in dev),
  and the connection goes to the address that was checked (pinned), so a DNS
  answer that changes between the check and the connect cannot slip through;
- no redirects are followed (`fetch_json` follows same-origin ones, at most 3);
- bounded bodies (every response, whoever reads it) and timeouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_BODY_BYTES = 256 * 1024
TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3

_ssl_context: ssl.SSLContext | None = None


class OutboundRefused(Exception):
    """A URL onbehalf will not fetch; the message says which rule and why."""


def _address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, dev: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if dev else "a loopback address (allowed only outside production)"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_private or ip.is_reserved or ip.is_unspecified or ip.is_multicast:
        return "a private or reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def check_url(url: str | httpx.URL, *, dev: bool) -> httpx.URL:
    """The URL if its scheme and literal host are acceptable; resolution is checked on connect."""
    parsed = httpx.URL(str(url))
    host = parsed.host
    if parsed.scheme not in ("https", "http") or not host:
        raise OutboundRefused(f"{parsed.copy_with(query=None)} is not an http(s) URL")
    literal = _ip_literal(host)
    loopback_name = host == "localhost" or (literal is not None and literal.is_loopback)
    if parsed.scheme == "http" and not (dev and loopback_name):
        raise OutboundRefused(
            f"{parsed.copy_with(query=None)} is not https (plain http is allowed only to "
            "loopback, and only outside production)"
        )
    if literal is not None:
        reason = _address_refusal(literal, dev)
        if reason:
            raise OutboundRefused(f"{parsed.copy_with(query=None)} points at {reason}")
    return parsed


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this machine (`localhost`, `*.localhost`, a loopback address)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    literal = _ip_literal(host)
    return literal is not None and literal.is_loopback


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks every request's URL and resolved addresses, then connects to the checked one."""

    def __init__(self, *, dev: bool) -> None:
        global _ssl_context
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        self.dev = dev
        self._inner = httpx.AsyncHTTPTransport(verify=_ssl_context)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = check_url(request.url, dev=self.dev)
        host = url.host
        if _ip_literal(host) is None:
            address = await self._resolve(url)
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
            request.url = url.copy_with(host=address)
        response = await self._inner.handle_async_request(request)
        return httpx.Response(
            response.status_code, headers=response.headers, extensions=response.extensions,
            stream=_Bounded(response.stream, url.copy_with(query=None)),
        )

    async def _resolve(self, url: httpx.URL) -> str:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                url.host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise OutboundRefused(f"{url.host} does not resolve") from None
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            reason = _address_refusal(ipaddress.ip_address(address.split("%", 1)[0]), self.dev)
            if reason:
                raise OutboundRefused(f"{url.host} resolves to {reason} ({address})")
        return addresses[0]

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Bounded(httpx.AsyncByteStream):
    """A body that stops at MAX_BODY_BYTES, whoever reads it (Authlib reads token answers)."""

    def __init__(self, inner: Any, url: httpx.URL) -> None:
        self._inner = inner
        self._url = url

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > MAX_BODY_BYTES:
                raise OutboundRefused(f"{self._url} answered more than {MAX_BODY_BYTES} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(*, dev: bool, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for URLs chosen by a server: guarded, no redirects, bounded time."""
    return httpx.AsyncClient(
        transport=GuardedTransport(dev=dev),
        follow_redirects=False,
        timeout=TIMEOUT_SECONDS,
        **kwargs,
    )


async def read_bounded(response: httpx.Response, limit: int | None = None) -> bytes:
    """The body of a streamed response, refusing more than `limit` (MAX_BODY_BYTES) bytes."""
    limit = limit or MAX_BODY_BYTES
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > limit:
            raise OutboundRefused(f"{response.request.url} answered more than {limit} bytes")
    return bytes(body)


async def fetch_json(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET a JSON document (status, parsed body or None), following same-origin redirects only."""
    current = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", current, headers=headers) as response:
            if response.is_redirect and "location" in response.headers:
                target = current.join(response.headers["location"])
                if (target.scheme, target.host, target.port) != (
                    current.scheme, current.host, current.port
                ):
                    raise OutboundRefused(
                        f"{current} redirects to another origin ({target.scheme}://"
                        f"{target.host}): cross-origin redirects are not followed"
                    )
                current = target
                continue
            body = await read_bounded(response)
            if response.status_code != 200:
                return response.status_code, None
            try:
                return 200, json.loads(body)
            except ValueError:
                return 200, None
    raise OutboundRefused(f"{url} redirects more than {MAX_REDIRECTS} times")
