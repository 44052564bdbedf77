"""`make dev` as a newcomer runs it: every server up, both demo MCP servers wired, Ctrl-C stops all.

The devserver (`python -m onbehalf.devserver`, what `make dev` runs) starts the
tickets server, the notes server with its OAuth authorization server, and
`langgraph dev`, on free ports here. The test then does what the banner says:
`onbehalf chat` as alice lists her tickets, connects her notes account (the
link, the consent page, the callback, the confirm step of the dev console) and
lists her notes; bob, unconnected, is asked to connect. The Redis is the
suite's private one, handed over as REDIS_URL, as a developer's would be.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.commands import BANNER_END, ROOT, Command, running
from tests.support.tokens import free_port, mint, subprocess_env

pytestmark = [pytest.mark.e2e]

STARTUP_SECONDS = 120


class DevServer(Command):
    def __init__(self, command: Command, ports: dict[str, int]) -> None:
        super().__init__(command.process, command.log)
        self.ports = ports
        self.url = f"http://127.0.0.1:{ports['DEV_SERVER_PORT']}"


@pytest.fixture(scope="module")
def dev(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    ports = {name: free_port() for name in ("DEV_SERVER_PORT", "DEV_MCP_PORT", "DEV_NOTES_PORT")}
    env = subprocess_env(
        **{name: str(port) for name, port in ports.items()},
        AGENT_MODEL="offline", REDIS_URL=redis_url, LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false", PYTHONUNBUFFERED="1",
    )
    log = tmp_path_factory.mktemp("make-dev") / "dev.log"
    with running("onbehalf.devserver", env, log, seconds=STARTUP_SECONDS) as command:
        yield DevServer(command, ports)


def chat(dev: DevServer, user: str, message: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(LANGGRAPH_URL=dev.url)
    return subprocess.run([sys.executable, "-m", "onbehalf", "chat", "--as", user, message],
                          env=env, capture_output=True, text=True, timeout=90, check=False)


def test_the_banner_names_every_server_and_the_connect_demo(dev: DevServer) -> None:
    banner = dev.output()
    assert f"{dev.url}/console" in banner
    assert f"http://127.0.0.1:{dev.ports['DEV_MCP_PORT']}/mcp" in banner
    assert f"http://127.0.0.1:{dev.ports['DEV_NOTES_PORT']}/mcp" in banner
    assert "connect_account server=notes" in banner and "Traceback" not in banner


def test_alice_lists_her_tickets_and_bob_is_asked_to_connect_notes(dev: DevServer) -> None:
    tickets = chat(dev, "alice", "list_tickets")
    assert tickets.returncode == 0, tickets.stderr
    assert "T-1001" in tickets.stdout
    bob = chat(dev, "bob", "list_notes")  # not connected: the model has no list_notes
    assert bob.returncode == 0, bob.stderr
    assert "bob-note-1" not in bob.stdout and "Traceback" not in bob.stderr
    assert "There is no tool list_notes here" in bob.stdout and "connect_account" in bob.stdout


def test_alice_connects_her_notes_account_as_the_banner_says(dev: DevServer) -> None:
    env = subprocess_env(LANGGRAPH_URL=dev.url)
    notes = f"http://127.0.0.1:{dev.ports['DEV_NOTES_PORT']}"
    connecting = subprocess.Popen(
        [sys.executable, "-m", "onbehalf", "chat", "--as", "alice",
         "connect_account server=notes"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert connecting.stdout is not None
        link = ""
        for line in connecting.stdout:
            if line.startswith(f"{notes}/authorize?"):
                link = line.strip()
                break
        assert link, connecting.communicate(timeout=30)
        with httpx.Client(timeout=10) as http:  # what the person's browser does
            consent = http.get(link)
            assert consent.status_code == 302, consent.text
            page = http.get(f"{notes}{consent.headers['location']}"
                            if consent.headers["location"].startswith("/")
                            else consent.headers["location"])
            assert "Authorize" in page.text and "alice" in page.text
            request_id = parse_qs(urlsplit(consent.headers["location"]).query)["req"][0]
            back = http.post(f"{notes}/consent", data={"req": request_id, "account": "alice",
                                                       "decision": "allow"})
            assert back.status_code == 302
            assert back.headers["location"].startswith(f"{dev.url}/oauth/callback?")
            landed = http.get(back.headers["location"])
            assert landed.status_code == 303
            target = landed.headers["location"]
            assert target.startswith(f"{dev.url}/console?"), target  # the dev confirm page
            query = parse_qs(urlsplit(target).query)
            done = http.post(f"{dev.url}/oauth/flows/{query['flow'][0]}/confirm",
                             json={"confirm": query["confirm"][0]},
                             headers={"Authorization": f"Bearer {mint('alice')}"})
            assert done.status_code == 200, done.text
        out, err = connecting.communicate(timeout=60)
        assert connecting.returncode == 0, err
        assert "connected" in out
    finally:
        if connecting.poll() is None:
            connecting.kill()
    notes_of_alice = chat(dev, "alice", "list_notes")
    assert notes_of_alice.returncode == 0, notes_of_alice.stderr
    assert "alice-note-1" in notes_of_alice.stdout
    assert "bob-note-1" not in notes_of_alice.stdout


def test_ctrl_c_stops_every_server(dev: DevServer) -> None:
    dev.process.send_signal(signal.SIGINT)
    assert dev.process.wait(timeout=30) == 0, dev.output()[-3000:]
    for port in dev.ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert "Traceback" not in dev.output()


def test_make_dev_in_a_terminal_is_quiet_and_ctrl_c_ends_it_cleanly(redis_url: str) -> None:
    """As a person runs it: `make dev` in a terminal (tmux), the banner last, no reloader
    chatter while it idles past a state flush, and Ctrl-C ends it with exit 0, no make error."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("the terminal test did not run: no tmux on PATH (apt-get install -y tmux)")
    ports = {name: free_port() for name in ("DEV_SERVER_PORT", "DEV_MCP_PORT", "DEV_NOTES_PORT")}
    env = subprocess_env(REDIS_URL=redis_url, LANGGRAPH_CLI_NO_ANALYTICS="1",
                         LANGSMITH_TRACING="false")
    session = f"onbehalf-dev-{ports['DEV_SERVER_PORT']}"
    make = " ".join(["make", "dev", *(f"{k}={v}" for k, v in ports.items())])
    tmux_env = [arg for k, v in env.items() if k in {"REDIS_URL", "LANGSMITH_TRACING",
                "LANGGRAPH_CLI_NO_ANALYTICS", "AUTH_JWT_SECRET", "TOKEN_SEALING_KEY",
                "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"} for arg in ("-e", f"{k}={v}")]
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "250", "-y", "80",
                    *tmux_env, "-c", str(ROOT), "bash", "--norc", "--noprofile"], check=True)

    def screen() -> str:
        return subprocess.run([tmux, "capture-pane", "-p", "-S", "-200", "-t", session],
                              capture_output=True, text=True, check=True).stdout

    try:
        subprocess.run([tmux, "send-keys", "-t", session, f"{make}; echo EXIT=$?", "Enter"],
                       check=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while BANNER_END not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.5)
        time.sleep(12)  # past one flush of the dev server's state (every 10 s)
        idle = screen()
        assert idle.rstrip().endswith(BANNER_END), idle[-2000:]  # the banner is the last thing
        assert "changes detected" not in idle
        subprocess.run([tmux, "send-keys", "-t", session, "C-c"], check=True)
        deadline = time.monotonic() + 30
        while not re.search(r"^EXIT=\d+$", screen(), re.M):
            assert time.monotonic() < deadline, screen()[-2000:]
            time.sleep(0.5)
        ended = screen()
        assert re.search(r"^EXIT=0$", ended, re.M), ended[-2000:]
        assert "make: ***" not in ended and "Traceback" not in ended
        for port in ports.values():
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
