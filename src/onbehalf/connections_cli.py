"""`onbehalf connections list|delete --as USER [SERVER]`: what the two routes do, from a shell.

It works on the store directly (`REDIS_URL`, `TOKEN_SEALING_KEY`), as an
operator would when a user asks to be disconnected, and prints the same JSON
as `GET /connections` and `DELETE /connections/{server}`. Never a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from onbehalf.cli_errors import CliError
from onbehalf.oauth.accounts import (
    OAuthProblem,
    connection_status,
    disconnect,
    oauth_store,
    use_oauth_store,
)
from onbehalf.oauth.routes import configured_oauth_servers
from onbehalf.redis_store import StoreError
from onbehalf.sealing import SealingKeyError


def cmd_connections(args: argparse.Namespace) -> int:
    try:
        body = asyncio.run(_run(args))
    except (OAuthProblem, StoreError, SealingKeyError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(body, indent=2))
    return 0


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
        return await disconnect(args.user, server)
    finally:
        await oauth_store().aclose()
        use_oauth_store(None)
