"""Environment settings of DESIGN.md §3, validated once at start-up.

Each group is its own model so that a process loads only what it needs: the
worker never needs the JWT secret, the MCP server never needs Redis.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_ALLOWED_ALGORITHMS = {
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
}
_HMAC = {"HS256", "HS384", "HS512"}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _env_config() -> SettingsConfigDict:
    # The process environment wins; a developer's .env is only read by the
    # LangGraph server when langgraph.json names it (DESIGN.md §7).
    return SettingsConfigDict(extra="ignore", case_sensitive=False)


class AuthSettings(BaseSettings):
    """How bearer JWTs are verified, at the server edge and in the reference MCP server."""

    model_config = _env_config()

    auth_jwt_secret: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: Annotated[list[str], NoDecode] = Field(default_factory=list)
    auth_leeway_seconds: float = 30.0

    @field_validator("auth_jwt_algorithms", "auth_jwt_audience", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_jwt_secret", "auth_jwks_url", "auth_jwt_issuer", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        if self.auth_jwt_secret is None and self.auth_jwks_url is None:
            raise ValueError(
                "set AUTH_JWT_SECRET (HS256 shared secret) or AUTH_JWKS_URL "
                "(your identity provider's JWKS endpoint) so that tokens can be verified"
            )
        if not self.auth_jwt_algorithms:
            self.auth_jwt_algorithms = (
                ["RS256", "ES256"] if self.auth_jwks_url else ["HS256"]
            )
        for alg in self.auth_jwt_algorithms:
            if alg.lower() == "none":
                raise ValueError("AUTH_JWT_ALGORITHMS must not contain 'none'")
            if alg not in _ALLOWED_ALGORITHMS:
                raise ValueError(f"AUTH_JWT_ALGORITHMS: unknown algorithm {alg!r}")
        hmac = [a for a in self.auth_jwt_algorithms if a in _HMAC]
        asym = [a for a in self.auth_jwt_algorithms if a not in _HMAC]
        if hmac and self.auth_jwt_secret is None:
            raise ValueError(f"AUTH_JWT_ALGORITHMS has {hmac} but AUTH_JWT_SECRET is not set")
        if asym and self.auth_jwks_url is None:
            raise ValueError(f"AUTH_JWT_ALGORITHMS has {asym} but AUTH_JWKS_URL is not set")
        if self.auth_leeway_seconds < 0:
            raise ValueError("AUTH_LEEWAY_SECONDS must not be negative")
        return self


class SealingSettings(BaseSettings):
    """Keys that seal the user's token inside the server's user object."""

    model_config = _env_config()

    token_sealing_key: SecretStr | None = None


class RedisSettings(BaseSettings):
    """The Redis every onbehalf store shares (handoff, connected accounts, OAuth).

    `ONBEHALF_REDIS_URL` wins over `REDIS_URL` (DESIGN.md §10): an engine whose queue
    reads `REDIS_URL` for itself (Aegra) keeps its queue apart from onbehalf's data.
    """

    model_config = _env_config()

    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           validation_alias=AliasChoices("onbehalf_redis_url", "redis_url"))
    user_secrets_prefix: str = "onbehalf-secret:"


class HandoffSettings(RedisSettings):
    """What a background worker (and the API side that feeds it) needs."""

    token_handoff_prefix: str = "agent-token:"
    token_handoff_ttl_seconds: int = Field(default=600, gt=0)
    langgraph_url: str = "http://127.0.0.1:2024"


class OAuthSettings(BaseSettings):
    """Connected accounts over OAuth (DESIGN.md §8)."""

    model_config = _env_config()

    onbehalf_public_url: str | None = None
    oauth_confirm_url: str | None = None
    oauth_flow_ttl_seconds: int = Field(default=600, gt=0, le=3600)
    oauth_key_prefix: str = "onbehalf-oauth:"
    onbehalf_env: str = ""
    langgraph_api_url: str | None = None
    """Set by `langgraph dev` to its own URL: the dev default of ONBEHALF_PUBLIC_URL."""

    @field_validator("onbehalf_public_url", "oauth_confirm_url", "langgraph_api_url",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().rstrip("/") or None
        return value

    @property
    def production(self) -> bool:
        return self.onbehalf_env.strip().lower() == "production"

    @property
    def public_url(self) -> str:
        """Where browsers reach this server; the redirect URI hangs off it."""
        url = self.onbehalf_public_url or (None if self.production else self.langgraph_api_url)
        if not url:
            raise SettingsError(
                "ONBEHALF_PUBLIC_URL is not set: an oauth MCP server needs the server's "
                "external base URL (the redirect URI is {ONBEHALF_PUBLIC_URL}/oauth/callback)"
            )
        return url

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/oauth/callback"

    @property
    def confirm_url(self) -> str:
        """The deployer's confirm page; in dev the console's."""
        if self.oauth_confirm_url:
            return self.oauth_confirm_url
        if self.production:
            raise SettingsError(
                "OAUTH_CONFIRM_URL is not set: in production the page of your app where a "
                "signed-in user confirms a connection is required (docs/connected-accounts.md)"
            )
        return f"{self.public_url}/console"


class AgentSettings(BaseSettings):
    """Which chat model the agents use and where their MCP servers are described."""

    model_config = _env_config()

    agent_model: str = "offline"
    mcp_servers: str | None = None
    """The servers file's JSON inline; wins over MCP_SERVERS_FILE."""
    mcp_servers_file: str | None = None
    """Path of the servers file; unset: `mcp_servers.json` in the working directory."""


class KitSettings(BaseSettings):
    """How the MCP kit pools sessions, bounds results, prewarms and traces."""

    model_config = _env_config()

    mcp_session_idle_seconds: float = Field(default=60.0, ge=0)
    """An idle pooled session is closed after this; 0 closes every session at run end."""
    mcp_session_pool_size: int = Field(default=256, ge=0)
    mcp_tools_cache_seconds: float = Field(default=60.0, ge=0)
    mcp_tool_result_max_chars: int = Field(default=50_000, ge=0)
    """A longer tool result is cut, with a note; 0 means no limit."""
    onbehalf_prewarm: bool = True
    """Open a user's sessions when their run is created (off where runs execute elsewhere)."""
    onbehalf_langsmith_inline: bool = True

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and not value.strip() and info.field_name:
            return cls.model_fields[info.field_name].default
        return value


def describe_validation_error(exc: Exception) -> str:
    """Turn a pydantic ValidationError into one line naming the variables at fault."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc.upper()}: {msg}" if loc else msg)
    return "; ".join(parts)


Settings = TypeVar("Settings", bound=BaseSettings)
_current: dict[type[BaseSettings], tuple[tuple[str | None, ...], BaseSettings]] = {}
_variables: dict[type[BaseSettings], tuple[str, ...]] = {}


def current(model: type[Settings]) -> Settings:
    """`model` for the environment as it is now, rebuilt only when one of its variables changed.

    Building a settings model costs ~0.2 ms; looking its variables up costs ~1 µs
    each. Hot paths (every run, every tool call) read settings through this, and a
    changed variable (a test, a reload) still takes effect at once. A malformed
    value is a SettingsError naming the variable."""
    names = _variables.get(model)
    if names is None:  # pydantic's `model_fields` is slow to read: once per model
        names = _variables[model] = tuple(
            alias.upper()
            for name, field in model.model_fields.items()
            for alias in (field.validation_alias.choices
                          if isinstance(field.validation_alias, AliasChoices) else [name])
        )
    key = tuple(os.environ.get(name) for name in names)
    found = _current.get(model)
    if found is not None and found[0] == key:
        return found[1]  # type: ignore[return-value]
    try:
        settings = model()
    except Exception as exc:  # pydantic.ValidationError
        raise SettingsError(f"invalid setting: {describe_validation_error(exc)}") from None
    _current[model] = (key, settings)
    return settings


@lru_cache(maxsize=1)
def auth_settings() -> AuthSettings:
    """The process-wide auth settings; raises SettingsError naming the variable."""
    try:
        return AuthSettings()
    except Exception as exc:  # pydantic.ValidationError
        raise SettingsError(f"invalid auth settings: {describe_validation_error(exc)}") from None


def redis_variable() -> str:
    """The variable that names onbehalf's Redis here, for messages that tell what to fix."""
    return "ONBEHALF_REDIS_URL" if os.environ.get("ONBEHALF_REDIS_URL") else "REDIS_URL"


def redact_url(url: str) -> str:
    """A Redis or database URL as it may appear in a message: the password (in the
    userinfo or the query) replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        # Without a colon the userinfo may be a password written in the wrong place: hide it too.
        netloc = f"{user}:***@{hostport}" if sep else f"***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
