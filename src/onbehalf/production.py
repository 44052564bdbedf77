"""Refusing to run production on a development configuration.

With `ONBEHALF_ENV=production` the server will not start while a setting is
dev-only: an ephemeral sealing key (lost on restart, different per replica),
no issuer or audience check (any token from the IdP for any API would do),
a short HS256 secret, the offline model, the repository's own dev servers file, or
an MCP server on loopback (a deployment that forgot `MCP_SERVERS` must not quietly run
the dev tickets server with a fake model). With an `oauth` server, onbehalf's public URL
must be https and its client metadata document (its `client_id` at authorization
servers) must build from it. The error names every variable at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from onbehalf.oauth.client_metadata import client_metadata_document
from onbehalf.oauth.guard import is_loopback_url
from onbehalf.servers import ServersFileError, parse_servers_config
from onbehalf.settings import OAuthSettings, SettingsError

MIN_SECRET_BYTES = 32


def production_problems(env: dict[str, str] | None = None) -> list[str]:
    """What keeps this environment from being a production configuration."""
    env = dict(os.environ) if env is None else env
    problems = []
    if not env.get("TOKEN_SEALING_KEY", "").strip():
        problems.append(
            "TOKEN_SEALING_KEY is not set (an ephemeral key loses every sealed token on "
            "restart and differs between replicas)"
        )
    if not env.get("AUTH_JWT_ISSUER", "").strip():
        problems.append("AUTH_JWT_ISSUER is not set (tokens of any issuer would be accepted)")
    if not env.get("AUTH_JWT_AUDIENCE", "").strip():
        problems.append(
            "AUTH_JWT_AUDIENCE is not set (tokens issued for any other API would be accepted)"
        )
    secret = env.get("AUTH_JWT_SECRET", "").strip()
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        problems.append(
            f"AUTH_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes (use AUTH_JWKS_URL "
            "with your identity provider, or a long random secret)"
        )
    if env.get("ONBEHALF_DEV_CONSOLE", "").strip() not in ("", "0"):
        problems.append(
            "ONBEHALF_DEV_CONSOLE is set (the dev console mints tokens with the dev secret; "
            "unset it in production)"
        )
    model = env.get("AGENT_MODEL", "").strip() or "offline"
    if model == "offline":
        problems.append(
            "AGENT_MODEL is 'offline' (the deterministic dev model; set it to your provider's "
            "model, e.g. openai:gpt-4.1-mini)"
        )
    problems.extend(_servers_problems(env))
    return problems


def _servers_problems(env: dict[str, str]) -> list[str]:
    inline = env.get("MCP_SERVERS", "").strip()
    file_setting = env.get("MCP_SERVERS_FILE", "").strip()
    if not inline and not file_setting:
        return [
            "neither MCP_SERVERS nor MCP_SERVERS_FILE is set, so the repository's dev servers "
            "file (mcp_servers.json) would be used: set one of them to your servers"
        ]
    try:
        if inline:
            config = parse_servers_config(inline, "MCP_SERVERS")
        else:
            config = parse_servers_config(Path(file_setting).read_text(), file_setting)
    except (ServersFileError, OSError):
        return []  # the servers file's own error names the problem when it is loaded
    source = "MCP_SERVERS" if inline else "MCP_SERVERS_FILE"
    problems = [
        f"{source}: server {name!r} is on loopback ({server.url}): a development server; "
        "point it at the MCP server's real address"
        for name, server in config.servers.items()
        if is_loopback_url(server.url)
    ]
    oauth = sorted(name for name, server in config.servers.items()
                   if server.auth.type == "oauth")
    if oauth:
        problems.extend(_oauth_problems(env, oauth))
    return problems


def _oauth_problems(env: dict[str, str], servers: list[str]) -> list[str]:
    """An `oauth` server needs where browsers come back to, and the deployer's confirm page."""
    which = ", ".join(repr(s) for s in servers)
    problems = []
    public = env.get("ONBEHALF_PUBLIC_URL", "").strip()
    if not public:
        problems.append(
            f"ONBEHALF_PUBLIC_URL is not set (the oauth server(s) {which} redirect users' "
            "browsers to {ONBEHALF_PUBLIC_URL}/oauth/callback)"
        )
    elif urlsplit(public).scheme != "https" or not urlsplit(public).hostname:
        problems.append(
            f"ONBEHALF_PUBLIC_URL={public!r} is not an https URL (authorization codes would "
            "travel in clear, and it is the base of onbehalf's client_id)"
        )
    else:
        problems.extend(_client_metadata_problems(public))
    confirm = env.get("OAUTH_CONFIRM_URL", "").strip()
    if not confirm:
        problems.append(
            f"OAUTH_CONFIRM_URL is not set (the page of your app where a signed-in user "
            f"confirms connecting {which}; docs/connected-accounts.md)"
        )
    elif urlsplit(confirm).scheme != "https":
        problems.append(f"OAUTH_CONFIRM_URL={confirm!r} is not an https URL")
    return problems


def _client_metadata_problems(public: str) -> list[str]:
    """The client metadata document must build from the settings alone (DESIGN.md §8.1)."""
    try:
        client_metadata_document(OAuthSettings(onbehalf_public_url=public,
                                               onbehalf_env="production"))
    except SettingsError as exc:
        return [str(exc)]
    except ValidationError:
        pass  # another OAuth setting is malformed: its own error names it at first use
    return []


def enforce_production_settings(env: dict[str, str] | None = None) -> None:
    """Raise SettingsError when ONBEHALF_ENV=production and the configuration is dev-only."""
    env = dict(os.environ) if env is None else env
    if env.get("ONBEHALF_ENV", "").strip().lower() != "production":
        return
    problems = production_problems(env)
    if problems:
        raise SettingsError(
            "refusing to start with ONBEHALF_ENV=production: " + "; ".join(problems)
        )
