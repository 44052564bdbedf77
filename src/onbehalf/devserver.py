"""`make dev`: the tickets MCP server and `langgraph dev`, wired for the offline model.

On first use it writes a `.env` with a random dev JWT secret and sealing key,
so that `onbehalf chat --as alice ...` in a second terminal mints tokens the
server accepts. Ctrl-C stops both processes.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from onbehalf.dotenv import load_project_dotenv

ROOT = Path(__file__).resolve().parents[2]
MCP_PORT = int(os.environ.get("DEV_MCP_PORT", "8765"))
SERVER_PORT = int(os.environ.get("DEV_SERVER_PORT", "2024"))
DEV_DEFAULTS = {
    "AUTH_JWT_ISSUER": "https://dev.onbehalf.local",
    "AUTH_JWT_AUDIENCE": "onbehalf-api",
    "AGENT_MODEL": "offline",
}


def _ensure_dotenv(path: Path) -> None:
    """Create or complete `.env` with dev-only secrets; never overwrite what is there."""
    existing = path.read_text() if path.exists() else ""
    keys = {line.split("=", 1)[0].strip() for line in existing.splitlines() if "=" in line}
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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if not _port_free(port):
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    os.chdir(ROOT)
    _ensure_dotenv(ROOT / ".env")
    load_project_dotenv(ROOT / ".env")
    for port, what, var in ((MCP_PORT, "tickets MCP server", "DEV_MCP_PORT"),
                            (SERVER_PORT, "langgraph dev", "DEV_SERVER_PORT")):
        if not _port_free(port):
            print(f"make dev: port {port} (for the {what}) is already in use; stop whatever "
                  f"uses it, or pick another port: make dev {var}=<port>", file=sys.stderr)
            return 1
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.setdefault("ONBEHALF_DEV_CONSOLE", "1")
    if MCP_PORT != 8765:  # mcp_servers.json names 8765; point the agents at the moved server
        servers = {"servers": {"tickets": {"url": f"http://127.0.0.1:{MCP_PORT}/mcp"}}}
        env.setdefault("MCP_SERVERS", json.dumps(servers))
    prefix = "" if SERVER_PORT == 2024 else f"LANGGRAPH_URL=http://127.0.0.1:{SERVER_PORT} "
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mcp = subprocess.Popen(
            [str(bin_dir / "onbehalf"), "tickets-mcp", "--port", str(MCP_PORT)], env=env
        )
        procs.append(mcp)
        if not _wait_port(MCP_PORT, mcp, 20):
            print("make dev: the tickets MCP server did not start (see above)", file=sys.stderr)
            return 1
        server = subprocess.Popen(
            [str(bin_dir / "langgraph"), "dev", "--host", "127.0.0.1",
             "--port", str(SERVER_PORT), "--no-browser", "--n-jobs-per-worker", "16"],
            env=env,
        )
        procs.append(server)
        if not _wait_port(SERVER_PORT, server, 120):
            print("make dev: langgraph dev did not start (see above)", file=sys.stderr)
            return 1
        print(
            "\n"
            f"Dev console: http://127.0.0.1:{SERVER_PORT}/console\n"
            "\n"
            "onbehalf is running (offline model, no API key needed):\n"
            f"  LangGraph server  http://127.0.0.1:{SERVER_PORT}\n"
            f"  tickets MCP       http://127.0.0.1:{MCP_PORT}/mcp\n"
            "\nIn another terminal, act as alice or bob:\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice "list_tickets"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "list_tickets status=open"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as alice "get_ticket ticket_id=T-1001"\n'
            f'  {prefix}.venv/bin/onbehalf chat --as bob "get_ticket ticket_id=T-1001"'
            "   # not his: not found\n"
            f'  {prefix}.venv/bin/onbehalf chat --as alice --graph ticket_triage '
            '"create_ticket title=x body=y"   # read-only graph: no create_ticket\n'
            "  .venv/bin/onbehalf token alice   # a raw JWT for curl or the SDK\n"
            "\nCtrl-C stops both servers.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("make dev: a server exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmake dev: stopping", flush=True)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
