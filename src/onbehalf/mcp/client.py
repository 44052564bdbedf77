"""Where a user's MCP client is built: one `MultiServerMCPClient` per user and run.

The middleware makes a `UserMCPClient` for the run's user; as each server's
credential is decided (credentials.py) its connection is added, and every
session of the run is opened with `client.session(name)`. Nothing in a
connection holds a token in clear:

- connections are the adapters' typed `StreamableHttpConnection` /
  `SSEConnection`; the credential rides in a `CredentialAuth` (`httpx.Auth`)
  that keeps it as a `SecretStr`, never in the `headers` dict;
- the shared TLS context and request pool come in through
  `httpx_client_factory` (transport.py), and the server's notifications
  (progress, logging, tools changed) reach the session being served through
  the client's `Callbacks` (sessions.py routes them to that session's run).

A client holds one user's credentials only and is never used for another
user; its sessions are pooled under keys that include the credential's
fingerprint (pool.py), so a later run of the same user and token may reuse them.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import httpx
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.interceptors import ToolCallInterceptor
from langchain_mcp_adapters.sessions import Connection, SSEConnection, StreamableHttpConnection
from pydantic import SecretStr

from onbehalf.jwt_auth import bearer_header, token_fingerprint
from onbehalf.mcp.elicitation import answer_ttl_seconds
from onbehalf.mcp.sessions import ROUTED_CALLBACKS, route_message, session_http_client
from onbehalf.servers import McpServer

MIN_SECRET_CHARS = 8
"""Shorter values are not looked for in answers (they would match ordinary text); no real
credential is that short."""


class CredentialAuth(httpx.Auth):
    """One credential, set on every request of one session: `Authorization` or another header.

    It holds the value as a `SecretStr`, so neither a repr, a log line nor a
    traceback's locals show it; httpx applies it to each request as it is sent.
    """

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self._value = SecretStr(value)

    def __repr__(self) -> str:
        return f"CredentialAuth({self.header}: **********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._value.get_secret_value()
        yield request

    def secrets(self) -> tuple[SecretStr, ...]:
        """What a server could echo of this credential: the header's value and, after an
        auth scheme (`Bearer …`), the token alone; longest first, so that the whole is
        replaced before its part. Kept as `SecretStr`, like the value itself."""
        value = self._value.get_secret_value()
        scheme, _, token = value.partition(" ")
        found = [value] + ([token.strip()] if scheme and token.strip() else [])
        kept = sorted({s for s in found if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        return tuple(SecretStr(s) for s in kept)

    def fingerprint(self, headers: Mapping[str, str]) -> str:
        """A sha256 prefix of everything this credential and the server's headers send."""
        sent = {**headers, self.header: self._value.get_secret_value()}
        return credential_fingerprint(sent)


def credential_fingerprint(headers: Mapping[str, str]) -> str:
    """What a pooled session is keyed on besides the user: the headers it was opened with."""
    material = "\n".join(f"{k.lower()}:{v}" for k, v in sorted(headers.items()))
    return token_fingerprint(material)


def mcp_connection(server: McpServer, auth: CredentialAuth | None) -> Connection:
    """The adapters' connection for `server`, carrying `auth` (None: no credential)."""
    headers = dict(server.headers)  # the servers file's own, non-secret headers
    common: dict[str, Any] = {
        "url": server.url,
        "headers": headers,
        "timeout": server.timeout_seconds,
        # a call may wait that long for the user's answer to the server's question, the
        # stream of its response silent meanwhile (elicitation.py)
        "sse_read_timeout": max(300.0, answer_ttl_seconds()),
        "httpx_client_factory": session_http_client,
        "session_kwargs": {"message_handler": route_message},
    }
    if auth is not None:
        common["auth"] = auth
    if server.transport == "sse":
        return SSEConnection(transport="sse", **common)
    return StreamableHttpConnection(transport="streamable_http", **common)


class UserMCPClient(MultiServerMCPClient):
    """The `MultiServerMCPClient` of one user for one run (never shared between users).

    `tool_interceptors` are the graph's (`McpToolsMiddleware(tool_interceptors=...)`):
    they wrap every MCP call of the tools bound from this client. They cannot
    change the credential: tools are bound to an open session, whose headers
    the adapters do not rebuild.
    """

    def __init__(
        self, identity: str, *, tool_interceptors: Sequence[ToolCallInterceptor] = ()
    ) -> None:
        super().__init__({}, callbacks=ROUTED_CALLBACKS, tool_interceptors=list(tool_interceptors))
        self.identity = identity
        self.interceptors_key = tuple(id(i) for i in self.tool_interceptors)
        """Tools bound with other interceptors are not reused for this client's runs."""

    def __repr__(self) -> str:  # the connections hold credentials: never show them
        return f"UserMCPClient(servers={sorted(self.connections)})"

    def add(self, name: str, connection: Connection) -> None:
        """Connect `name` with this user's connection (replacing an earlier credential)."""
        self.connections[name] = connection


def bearer_client(identity: str, name: str, url: str, token: str,
                  *, timeout_seconds: float = 10.0) -> UserMCPClient:
    """A client of one streamable-HTTP server with one bearer token (tests, benchmarks,
    embedding code that already holds a verified user's token)."""
    client = UserMCPClient(identity)
    server = McpServer(url=url, timeout_seconds=timeout_seconds)
    client.add(name, mcp_connection(server, CredentialAuth("Authorization", bearer_header(token))))
    return client
