"""`onbehalf` command line: one parser, each command implemented next to the code it drives.

Exit codes follow DESIGN.md §4; every non-zero exit prints one reason line on
stderr, never a traceback and never a token.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from onbehalf.cli_errors import CliError
from onbehalf.dotenv import load_project_dotenv


def _command(target: str) -> Callable[[argparse.Namespace], int]:
    """`module:function`, imported only when that command runs (start-up stays fast)."""
    module, _, function = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), function)(args))

    return run


_token = _command("onbehalf.client_cli:cmd_token")
_chat = _command("onbehalf.client_cli:cmd_chat")
_tickets_mcp = _command("onbehalf.demo.tickets.server:cmd_serve")
_notes_mcp = _command("onbehalf.demo.notes.server:cmd_serve")
_handoff_put = _command("onbehalf.worker.cli:cmd_handoff_put")
_worker_run = _command("onbehalf.worker.cli:cmd_worker_run")
_secrets = _command("onbehalf.secrets_cli:cmd_secrets")
_connections = _command("onbehalf.connections_cli:cmd_connections")


USAGE_EXIT_CODE = 64
"""Usage errors get EX_USAGE, so that 2 keeps meaning "no usable token" (DESIGN.md §4)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT_CODE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onbehalf",
        description="LangGraph agents that call MCP tools on behalf of the user who asked.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("token", help="mint a dev JWT with the configured secret, issuer, audience")
    p.add_argument("user", help="the subject (sub) of the token, e.g. alice")
    p.add_argument("--scopes", nargs="*", default=None,
                   help="scopes to grant (default: tickets:read tickets:write)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    p.set_defaults(func=_token)

    p = sub.add_parser("chat", help="talk to the server as a user through the SDK")
    p.add_argument("--as", dest="user", required=True, help="who to act as, e.g. alice")
    p.add_argument("--graph", default="assistant", help="graph id (default: assistant)")
    p.add_argument("--thread-id", default=None, help="continue this thread")
    p.add_argument("--url", default=None, help="server URL (default: LANGGRAPH_URL)")
    p.add_argument("--scopes", nargs="*", default=None, help="scopes for the minted token")
    p.add_argument("message", nargs="+", help="what to say")
    p.set_defaults(func=_chat)

    p = sub.add_parser("tickets-mcp", help="run the reference tickets MCP server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=_tickets_mcp)

    p = sub.add_parser("notes-mcp", help="run the demo notes MCP server with its own OAuth 2.1 "
                       "authorization server (connected accounts in make dev)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.set_defaults(func=_notes_mcp)

    handoff = sub.add_parser("handoff", help="the API side of the worker token handoff")
    hsub = handoff.add_subparsers(dest="handoff_command", required=True, parser_class=_Parser)
    p = hsub.add_parser("put", help="store a token (read from stdin) for a worker")
    p.add_argument("execution_id")
    p.add_argument("--ttl", type=int, default=None, help="upper bound on the TTL in seconds")
    p.set_defaults(func=_handoff_put)

    secrets = sub.add_parser(
        "secrets", help="a user's connected-account credentials (for user_secret servers)"
    )
    ssub = secrets.add_subparsers(dest="secrets_command", required=True, parser_class=_Parser)
    for action, text in (("set", "store a secret (value read from stdin)"),
                         ("delete", "delete a secret"), ("list", "list secret names")):
        p = ssub.add_parser(action, help=text)
        p.add_argument("--as", dest="user", required=True, help="whose secret")
        if action != "list":
            p.add_argument("name", help="the secret's name, as the servers file names it")
        p.set_defaults(func=_secrets)

    connections = sub.add_parser(
        "connections", help="a user's OAuth connections (for oauth servers), as the routes show"
    )
    csub = connections.add_subparsers(
        dest="connections_command", required=True, parser_class=_Parser
    )
    for action, text in (("list", "the user's oauth servers and their state (never a token)"),
                         ("delete", "forget the user's tokens for a server, revoking them")):
        p = csub.add_parser(action, help=text)
        p.add_argument("--as", dest="user", required=True, help="whose connections")
        if action == "delete":
            p.add_argument("server", help="the oauth server's name in the servers file")
        p.set_defaults(func=_connections)

    worker = sub.add_parser("worker", help="background worker commands")
    wsub = worker.add_subparsers(dest="worker_command", required=True, parser_class=_Parser)
    p = wsub.add_parser("run", help="take the handed-off token and run a graph as that user")
    p.add_argument("--execution-id", required=True)
    p.add_argument("--graph", default="assistant")
    p.add_argument("--thread-id", default=None)
    p.add_argument("message", nargs="+")
    p.set_defaults(func=_worker_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_project_dotenv()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as exc:
        print(f"onbehalf: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onbehalf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
