"""Finding an MCP server's authorization server, as the MCP authorization spec says.

1. Ask the server without a token: its 401 names the protected-resource metadata
   (`WWW-Authenticate: Bearer resource_metadata="…"`, RFC 9728 §5.1); without it,
   the well-known URLs (`/.well-known/oauth-protected-resource[/path]`).
2. The metadata's `resource` must be this server's URL, and it names the
   authorization server; its metadata comes from RFC 8414's well-known URL, with
   OpenID discovery as the fallback, and its `issuer` must be that URL.
3. PKCE S256 must be advertised (an AS that does not is refused).

Every fetch goes through the SSRF guard (`guard.py`). The URL-building and
issuer rules are the `mcp` SDK's own (`mcp.client.auth.utils`). Results are
cached per server URL for `CACHE_SECONDS`: metadata is public and the same for
every user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

import httpx
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    issuers_match,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from mcp.types import LATEST_PROTOCOL_VERSION
from pydantic import BaseModel, ValidationError

from onbehalf.oauth.guard import OutboundRefused, fetch_json, guarded_client, read_bounded

_Document = TypeVar("_Document", bound=BaseModel)

CACHE_SECONDS = 300.0
_PROBE = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
               "clientInfo": {"name": "onbehalf-discovery", "version": "1"}},
}


class DiscoveryError(Exception):
    """The server's OAuth metadata cannot be used; the message says which rule failed."""


@dataclass(frozen=True)
class AuthorizationServer:
    """What onbehalf needs to run the flow for one MCP server (the same for every user)."""

    resource: str
    """The MCP server's canonical URL: the `resource` parameter (RFC 8707) of every request."""
    issuer: str
    metadata: OAuthMetadata
    scope: str | None
    """Space-separated scopes to ask for (the servers file's, else the server's hint)."""
    discovered_at: float
    iss_required: bool = False
    """RFC 9207: an AS that says it sends `iss` must send it (and the right one)."""


_cache: dict[tuple[str, str | None, bool], AuthorizationServer] = {}


async def discover(
    name: str, server_url: str, *, scopes: list[str] | None, dev: bool
) -> AuthorizationServer:
    """The authorization server of MCP server `name` (cached; refreshed after CACHE_SECONDS)."""
    wanted = " ".join(scopes) if scopes else None
    key = (server_url, wanted, dev)
    known = _cache.get(key)
    if known is not None and time.monotonic() - known.discovered_at < CACHE_SECONDS:
        return known
    try:
        async with guarded_client(dev=dev) as client:
            found = await _discover(client, server_url, wanted)
    except OutboundRefused as exc:
        raise DiscoveryError(
            f"MCP server {name!r}: OAuth discovery refused to fetch a URL: {exc}"
        ) from None
    except DiscoveryError as exc:
        raise DiscoveryError(f"MCP server {name!r}: {exc}") from None
    except httpx.HTTPError as exc:
        raise DiscoveryError(
            f"MCP server {name!r}: OAuth discovery failed ({type(exc).__name__})"
        ) from None
    _cache[key] = found
    return found


def forget_discovery() -> None:
    """Drop cached metadata (tests; a server that moved its authorization server)."""
    _cache.clear()


async def _first_document(
    client: httpx.AsyncClient, urls: list[str], model: type[_Document], what: str, *,
    stop_on_5xx: bool,
) -> tuple[_Document | None, dict]:
    """The first of `urls` that answers 200 with a JSON object, parsed as `model`."""
    for url in urls:
        status, body = await fetch_json(client, url, headers=_headers())
        if status == 200 and isinstance(body, dict):
            try:
                return model.model_validate(body), body
            except ValidationError:
                raise DiscoveryError(f"{url} is not {what}") from None
        if stop_on_5xx and status >= 500:
            break
    return None, {}


async def _discover(
    client: httpx.AsyncClient, server_url: str, wanted: str | None
) -> AuthorizationServer:
    resource = resource_url_from_server_url(server_url)
    hinted_metadata, hinted_scope = await _probe(client, server_url)
    prm, _ = await _first_document(
        client, build_protected_resource_metadata_discovery_urls(hinted_metadata, server_url),
        ProtectedResourceMetadata, "protected-resource metadata", stop_on_5xx=False,
    )
    if prm is not None:
        if not _same_resource(str(prm.resource), resource):
            raise DiscoveryError(
                f"the protected-resource metadata is for {prm.resource}, not {resource} "
                "(RFC 9728 §3.3): refused"
            )
        issuer_url = str(prm.authorization_servers[0])
    else:
        issuer_url = None  # 2025-03-26 servers: the AS metadata at the server's own origin
    metadata, raw = await _first_document(
        client, build_oauth_authorization_server_metadata_discovery_urls(issuer_url, server_url),
        OAuthMetadata, "authorization-server metadata", stop_on_5xx=True,
    )
    if metadata is None:
        raise DiscoveryError(
            "no authorization-server metadata found (RFC 8414 / OpenID discovery)"
        )
    origin = httpx.URL(server_url)
    expected = issuer_url or f"{origin.scheme}://{origin.netloc.decode()}"
    if not issuers_match(str(metadata.issuer), expected):
        raise DiscoveryError(
            f"the authorization server's metadata names issuer {metadata.issuer}, not "
            f"{expected} (RFC 8414 §3.3): refused"
        )
    if "S256" not in (metadata.code_challenge_methods_supported or []):
        raise DiscoveryError(
            "the authorization server does not advertise PKCE S256 "
            "(code_challenge_methods_supported): refused"
        )
    scope = wanted or hinted_scope or (
        " ".join(prm.scopes_supported) if prm is not None and prm.scopes_supported else None
    )
    return AuthorizationServer(
        resource=resource,
        issuer=str(metadata.issuer),
        metadata=metadata,
        scope=scope,
        discovered_at=time.monotonic(),
        iss_required=raw.get("authorization_response_iss_parameter_supported") is True,
    )


async def _probe(client: httpx.AsyncClient, server_url: str) -> tuple[str | None, str | None]:
    """The server's 401 hints: where its metadata is, and which scope it wants."""
    headers = {**_headers(), "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    async with client.stream("POST", server_url, json=_PROBE, headers=headers) as response:
        await read_bounded(response)
    if response.status_code not in (401, 403):
        return None, None
    return (
        extract_resource_metadata_from_www_auth(response),
        extract_scope_from_www_auth(response),
    )


def _same_resource(advertised: str, resource: str) -> bool:
    return advertised.rstrip("/") == resource.rstrip("/") or check_resource_allowed(
        requested_resource=resource, configured_resource=advertised
    )


def _headers() -> dict[str, str]:
    return {"MCP-Protocol-Version": LATEST_PROTOCOL_VERSION}
