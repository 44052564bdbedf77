"""`onbehalf connections list|delete --as USER [SERVER]`: what the two routes do, from a shell.

It works on the store directly, as an operator would when a user asks to be
disconnected, and prints the same JSON as `GET /connections` and
`DELETE /connections/{server}`. Never a token.

It needs what reading and forgetting a connection needs (docs/deployment.md): the
server's servers file, `REDIS_URL`, `TOKEN_SEALING_KEY` and `OAUTH_KEY_PREFIX`; for
`delete`, the variables a server's `client_id_env`/`client_secret_env` name, because
revoking (RFC 7009) authenticates as the client the tokens were issued to. Nothing of
the browser flow (`ONBEHALF_PUBLIC_URL`, `OAUTH_CONFIRM_URL`) and no JWT settings. A
missing one is named (one line, exit 1) before the store is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from onbehalf.cli_errors import CliError
from onbehalf.oauth.accounts import (
    OAuthProblem,
    OAuthServer,
    connection_status,
    disconnect,
    oauth_store,
    use_oauth_store,
)
from onbehalf.oauth.routes import configured_oauth_servers
from onbehalf.redis_store import StoreError
from onbehalf.sealing import SealingKeyError, process_sealing_keys
from onbehalf.servers import DEFAULT_SERVERS_FILE
from onbehalf.settings import (
    AgentSettings,
    OAuthSettings,
    RedisSettings,
    SealingSettings,
    SettingsError,
    current,
)


def cmd_connections(args: argparse.Namespace) -> int:
    try:
        _check_settings()
        body = asyncio.run(_run(args))
    except (OAuthProblem, StoreError, SealingKeyError, SettingsError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(body, indent=2))
    return 0


def _check_settings() -> None:
    """What both commands need, before Redis is touched: a missing one is one line naming it.

    Without the sealing key the stored tokens would not open: `list` would call every
    connection `needs_reconnect`, and `delete` would drop them without revoking them."""
    current(RedisSettings)  # a malformed value: SettingsError naming the variable
    current(OAuthSettings)
    key = current(SealingSettings).token_sealing_key
    if key is None or not key.get_secret_value().strip():
        raise CliError(
            "TOKEN_SEALING_KEY is not set: set it to the server's TOKEN_SEALING_KEY "
            "(the connections are sealed with it)"
        )
    process_sealing_keys()  # a malformed key: SealingKeyError naming it
    agent = current(AgentSettings)
    if not ((agent.mcp_servers or "").strip() or agent.mcp_servers_file
            or (Path.cwd() / DEFAULT_SERVERS_FILE).is_file()):
        raise CliError(
            "MCP_SERVERS_FILE is not set: set it to the server's servers file (or MCP_SERVERS "
            f"to its JSON); there is no {DEFAULT_SERVERS_FILE} in this directory either"
        )


def _check_client_credentials(server: OAuthServer) -> None:
    """Revoking authenticates as the configured client: its variables must be set here."""
    for variable, what in ((server.client_id_env, "client id"),
                           (server.client_secret_env, "client secret")):
        if variable and not os.environ.get(variable, "").strip():
            raise CliError(
                f"{variable} is not set: MCP server {server.name!r} takes its OAuth {what} "
                "from it (the servers file's client_id_env/client_secret_env); set it as on "
                "the server so that the tokens can be revoked. Nothing was deleted"
            )


async def _run(args: argparse.Namespace) -> dict:
    servers = configured_oauth_servers()
    try:
        if args.connections_command == "list":
            return {"connections": [await connection_status(args.user, s)
                                    for s in servers.values()]}
        server = servers.get(args.server)
        if server is None:
            known = ", ".join(sorted(servers)) or "none configured"
            raise CliError(f"no oauth MCP server named {args.server!r} (oauth servers: {known})")
        _check_client_credentials(server)
        return await disconnect(args.user, server)
    finally:
        await oauth_store().aclose()
        use_oauth_store(None)
