"""`make dev`: the demo MCP servers and `langgraph dev`, wired for the offline model.

Two MCP servers stand in for what agents really reach: `tickets` takes the
user's own JWT (`user_token`), and `notes` is a hosted-style server with its
own OAuth 2.1 authorization server (`oauth`, DESIGN.md §8), so connecting an
account can be watched in the console. Connected accounts need Redis: the
`REDIS_URL` one when it answers, else a private `redis-server` started here
for the session (nothing kept on disk).

On first use it writes a `.env` with a random dev JWT secret and sealing key,
so that `onbehalf chat --as alice ...` in a second terminal mints tokens the
server accepts. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from onbehalf.dotenv import load_project_dotenv
from onbehalf.processes import (
    STOPPING,
    ensure_redis,
    port_free,
    run_at_the_terminal,
    stop_all,
    stopped,
    wait_port,
    watch,
)

ROOT = Path(__file__).resolve().parents[2]
MCP_PORT = int(os.environ.get("DEV_MCP_PORT", "8765"))
NOTES_PORT = int(os.environ.get("DEV_NOTES_PORT", "8766"))
SERVER_PORT = int(os.environ.get("DEV_SERVER_PORT", "2024"))
DEV_DEFAULTS = {
    "AUTH_JWT_ISSUER": "https://dev.onbehalf.local",
    "AUTH_JWT_AUDIENCE": "onbehalf-api",
    "AGENT_MODEL": "offline",
}


def ensure_dotenv(path: Path) -> None:
    """Create or complete `.env` with dev-only secrets; never overwrite what is there."""
    existing = path.read_text() if path.exists() else ""
    keys = {line.split("=", 1)[0].strip() for line in existing.splitlines() if "=" in line}
    keys |= {name for name in (*DEV_DEFAULTS, "AUTH_JWT_SECRET", "TOKEN_SEALING_KEY")
             if os.environ.get(name)}  # set by the caller: nothing to write down
    additions = []
    if "AUTH_JWT_SECRET" not in keys and not os.environ.get("AUTH_JWKS_URL"):
        additions.append(f"AUTH_JWT_SECRET={secrets.token_urlsafe(32)}")
    if "TOKEN_SEALING_KEY" not in keys:
        key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        additions.append(f"TOKEN_SEALING_KEY={key}")
    for name, value in DEV_DEFAULTS.items():
        if name not in keys:
            additions.append(f"{name}={value}")
    if additions:
        text = existing.rstrip("\n")
        header = "" if existing else "# written by `make dev`: dev-only settings, never commit\n"
        path.write_text(header + (text + "\n" if text else "") + "\n".join(additions) + "\n")
        print(f"==> wrote dev settings to {path}")


def dev_servers_config(mcp_port: int, notes_port: int) -> str:
    """The servers file of `make dev` and `make serve`: the shipped one on the demo ports,
    plus `notes`."""
    config = json.loads((ROOT / "mcp_servers.json").read_text())
    config["servers"]["tickets"]["url"] = f"http://127.0.0.1:{mcp_port}/mcp"
    config["servers"]["notes"] = {
        "url": f"http://127.0.0.1:{notes_port}/mcp",
        "transport": "streamable_http",
        "auth": {"type": "oauth", "scopes": ["notes"],
                 "description": "the demo Notes app: the user's own notes"},
        "timeout_seconds": 10,
    }
    return json.dumps(config)


def main() -> int:
    return run_at_the_terminal(_serve)


def _serve() -> int:
    os.chdir(ROOT)
    ensure_dotenv(ROOT / ".env")
    load_project_dotenv(ROOT / ".env")
    for port, what, var in ((MCP_PORT, "tickets MCP server", "DEV_MCP_PORT"),
                            (NOTES_PORT, "notes MCP server", "DEV_NOTES_PORT"),
                            (SERVER_PORT, "langgraph dev", "DEV_SERVER_PORT")):
        if not port_free(port):
            print(f"make dev: port {port} (for the {what}) is already in use; stop whatever "
                  f"uses it, or pick another port: make dev {var}=<port>", file=sys.stderr)
            return 1
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.setdefault("ONBEHALF_DEV_CONSOLE", "1")
    # the server's routine info lines (queue stats, the reloader's "N changes detected"
    # every time the dev state is flushed) bury what a person needs; warnings still show
    env.setdefault("LOG_LEVEL", "WARNING")
    own_servers = not (env.get("MCP_SERVERS") or env.get("MCP_SERVERS_FILE"))
    if own_servers:
        env["MCP_SERVERS"] = dev_servers_config(MCP_PORT, NOTES_PORT)
    prefix = "" if SERVER_PORT == 2024 else f"LANGGRAPH_URL=http://127.0.0.1:{SERVER_PORT} "
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_url = ensure_redis(env, procs, "make dev")
        for command, port, what in (("tickets-mcp", MCP_PORT, "tickets MCP server"),
                                    ("notes-mcp", NOTES_PORT, "notes MCP server")):
            mcp = subprocess.Popen(
                [str(bin_dir / "onbehalf"), command, "--port", str(port)], env=env,
                start_new_session=True,
            )
            procs.append(mcp)
            if not wait_port(port, mcp, 20):
                if STOPPING.is_set():
                    return stopped("make dev")
                print(f"make dev: the {what} did not start (see above)", file=sys.stderr)
                return 1
        server = subprocess.Popen(
            [str(bin_dir / "langgraph"), "dev", "--host", "127.0.0.1",
             "--port", str(SERVER_PORT), "--no-browser", "--n-jobs-per-worker", "16"],
            env=env, start_new_session=True,
        )
        procs.append(server)
        if not wait_port(SERVER_PORT, server, 120):
            if STOPPING.is_set():
                return stopped("make dev")
            print("make dev: langgraph dev did not start (see above)", file=sys.stderr)
            return 1
        print(
            "\n"
            f"Dev console: http://127.0.0.1:{SERVER_PORT}/console\n"
            "\n"
            "onbehalf is running (offline model, no API key needed):\n"
            f"  LangGraph server  http://127.0.0.1:{SERVER_PORT}\n"
            f"  tickets MCP       http://127.0.0.1:{MCP_PORT}/mcp   (acts with the user's JWT)\n"
            f"  notes MCP         http://127.0.0.1:{NOTES_PORT}/mcp   (OAuth: connect an "
            "account; alice or bob)\n"
            f"  Redis             {redis_url or 'none: connecting accounts is unavailable'}\n"
            + ("" if own_servers else "  (MCP_SERVERS/MCP_SERVERS_FILE is set: the agents use "
               "your servers, not these)\n") +
            "\nIn another terminal, act as alice or bob:\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_tickets"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "list_tickets status=open"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as alice "get_ticket ticket_id=T-1001"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "get_ticket ticket_id=T-1001"'
            "   # not his: not found\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice --graph ticket_triage '
            '"create_ticket title=x body=y"   # read-only graph: no create_ticket\n'
            f'  {prefix}.venv/bin/onbehalf chat --as alice "connect_account server=notes"'
            "   # prints a link: open it, sign in as alice, confirm\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_notes"'
            "   # after connecting: alice's notes\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "add_note text=hi"'
            "   # step-up: allow notes:write, then it runs\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "share_note text=hi"'
            "   # the server asks which notebook (a form)\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "link_calendar"'
            "   # the server asks you to open a page (a URL)\n"
            "  .venv/bin/onbehalf token alice   # a raw JWT for curl or the SDK\n"
            "\nCtrl-C stops every server.\n",
            flush=True,
        )
        return watch(procs, "make dev")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
