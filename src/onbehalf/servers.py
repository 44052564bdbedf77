"""The MCP servers file (DESIGN.md §3): which servers exist and how each is authenticated.

Configuration is data: a pydantic model validated when first used, with
errors that name the server and the key. `MCP_SERVERS` (inline JSON) wins
over `MCP_SERVERS_FILE`, which defaults to `mcp_servers.json` at the project
root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from onbehalf.errors import ServersFileError
from onbehalf.settings import AgentSettings, current

log = logging.getLogger("onbehalf.mcp")

DEFAULT_SERVERS_FILE = "mcp_servers.json"
_SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(cls: type, value: str | None) -> str | None:
    """Credentials are named, never written, in the servers file."""
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserTokenAuth(_Strict):
    """Send the caller's own JWT, exactly as presented, as the bearer token."""

    type: Literal["user_token"] = "user_token"
    audience: str | None = None
    """When set, refuse to send a token whose `aud` does not include it (no passthrough)."""


class TokenExchangeAuth(_Strict):
    """RFC 8693: exchange the caller's JWT for one issued for this server."""

    type: Literal["token_exchange"]
    token_url: str
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    connect_url: str | None = None
    """Where a user re-authorizes when the exchange is refused (shown in the interrupt)."""

    _env_names = field_validator("client_id_env", "client_secret_env")(_env_name)


class StaticAuth(_Strict):
    """A service credential from the environment, for servers with no per-user data."""

    type: Literal["static"]
    value_env: str
    header: str = "Authorization"
    scheme: str | None = "Bearer"

    _env_names = field_validator("value_env")(_env_name)


class UserSecretAuth(_Strict):
    """The user's own credential for a third-party service (a connected account)."""

    type: Literal["user_secret"]
    secret: str
    """Name of the secret in the per-user store (`onbehalf secrets set --as USER NAME`)."""
    header: str = "Authorization"
    scheme: str | None = "Bearer"
    connect_url: str | None = None
    """Where the user connects or reconnects that account."""

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", value):
            raise ValueError(f"{value!r} is not a valid secret name")
        return value


class OAuthAuth(_Strict):
    """The MCP authorization spec: each user connects their own account (DESIGN.md §8)."""

    type: Literal["oauth"]
    scopes: list[str] | None = None
    """Scopes to ask for; unset: the server's own hint (WWW-Authenticate, then its metadata)."""
    description: str | None = None
    """What the model is told the server is for, when it offers to connect it."""
    client_id_env: str | None = None
    """A client registered at the server's authorization server; unset: onbehalf registers
    itself (RFC 7591) once per server and keeps the registration sealed in REDIS_URL."""
    client_secret_env: str | None = None

    _env_names = field_validator("client_id_env", "client_secret_env")(_env_name)

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str] | None) -> list[str] | None:
        for scope in value or []:
            if not re.match(r"^[\x21\x23-\x5b\x5d-\x7e]+$", scope):
                raise ValueError(f"{scope!r} is not a valid OAuth scope (RFC 6749 §3.3)")
        return value

    @model_validator(mode="after")
    def _secret_needs_id(self) -> OAuthAuth:
        if self.client_secret_env and not self.client_id_env:
            raise ValueError("client_secret_env needs client_id_env")
        return self


class NoAuth(_Strict):
    """No credential at all (public servers)."""

    type: Literal["none"]


ServerAuth = Annotated[
    UserTokenAuth | TokenExchangeAuth | UserSecretAuth | StaticAuth | OAuthAuth | NoAuth,
    Field(discriminator="type"),
]


class McpServer(_Strict):
    """One MCP server as the servers file describes it."""

    url: str
    transport: Literal["streamable_http", "http", "sse"] = "streamable_http"
    auth: ServerAuth = Field(default_factory=UserTokenAuth)
    tools: list[str] | None = None
    """Allowlist of tool names (the server's own names); None means every tool."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra non-secret headers; an Authorization header here is refused."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:8765/mcp")
        return value

    @field_validator("headers")
    @classmethod
    def _no_credentials_in_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in {"authorization", "cookie", "proxy-authorization"}:
                raise ValueError(
                    f"header {name!r} carries credentials: use 'auth' instead so that "
                    "it is never shared between users"
                )
        return value


class McpServersConfig(_Strict):
    """The whole servers file."""

    servers: dict[str, McpServer] = Field(default_factory=dict)

    @field_validator("servers")
    @classmethod
    def _names(cls, value: dict[str, McpServer]) -> dict[str, McpServer]:
        for name in value:
            if not _SERVER_NAME.match(name):
                raise ValueError(
                    f"server name {name!r} must start with a letter and contain only "
                    "letters, digits, '_' or '-'"
                )
        return value


_AUTH_TAGS = r"\.(user_token|token_exchange|user_secret|static|oauth|none)(?=\.|$)"


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "servers":
            where = f"server {loc[1]!r}"
            key = ".".join(p for p in loc[2:] if not p.startswith(("function-", "tagged-union")))
            # the discriminated union adds the tag to the path: drop it for readability
            key = re.sub(_AUTH_TAGS, "", key)
            lines.append(f"{where}: {key or 'entry'}: {msg}")
        else:
            lines.append(f"{'.'.join(loc) or 'file'}: {msg}")
    return f"invalid MCP servers config ({source}): " + "; ".join(lines)


def parse_servers_config(text: str, source: str) -> McpServersConfig:
    """Parse and validate the servers file text; errors name the source, server and key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServersFileError(
            f"invalid MCP servers config ({source}): not valid JSON at line {exc.lineno} "
            f"column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict) or "servers" not in data:
        raise ServersFileError(
            f"invalid MCP servers config ({source}): expected an object with a 'servers' key"
        )
    try:
        return McpServersConfig.model_validate(data)
    except ValidationError as exc:
        raise ServersFileError(_describe(exc, source)) from None


_cache: dict[tuple[str | None, str | None, float | None], McpServersConfig] = {}


def load_servers_config() -> McpServersConfig:
    """The servers config of this process, re-read only when its source changes."""
    settings = current(AgentSettings)
    inline, file_setting = settings.mcp_servers, settings.mcp_servers_file
    if inline and inline.strip():
        key = (inline, None, None)
        if key not in _cache:
            _cache[key] = parse_servers_config(inline, "MCP_SERVERS")
        return _cache[key]
    if file_setting:
        path = Path(file_setting)
        if not path.is_file():
            raise ServersFileError(
                f"MCP_SERVERS_FILE={file_setting!r}: no such file (set it to the path of your "
                "servers file, or unset it to use mcp_servers.json)"
            )
    else:
        # the project root is where the server runs (langgraph dev, Aegra: beside
        # langgraph.json), never where onbehalf happens to be installed
        path = Path.cwd() / DEFAULT_SERVERS_FILE
        if not path.is_file():
            log.warning("no MCP servers configured: %s not found and MCP_SERVERS unset", path)
            return McpServersConfig()
    mtime = path.stat().st_mtime
    key = (None, str(path), mtime)
    if key not in _cache:
        _cache.clear()
        _cache[key] = parse_servers_config(path.read_text(), str(path))
    return _cache[key]


async def aload_servers_config() -> McpServersConfig:
    """`load_servers_config` for run time: file checks go to a thread, inline JSON does not.

    The file is stat-ed on every new run (to notice edits); that must not block the
    event loop, but an inline `MCP_SERVERS` needs no I/O and no thread hop.
    """
    inline = current(AgentSettings).mcp_servers
    if inline and inline.strip():
        return load_servers_config()
    return await asyncio.to_thread(load_servers_config)
