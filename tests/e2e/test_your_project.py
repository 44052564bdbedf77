"""onbehalf in somebody else's LangGraph project, exactly as docs/adding-an-agent.md says.

A fresh project in a temp directory, with its own venv holding the onbehalf
wheel built from this repository: its own `src/agents/support/graph.py`
(a `build_mcp_agent` call), a one-line `src/auth.py`, its own `langgraph.json`
and `mcp_servers.json`. `langgraph dev` runs there; alice and bob chat
through the SDK and the wheel's own `onbehalf chat`, each acting as
themselves on the tickets server, and bob gets 404 on alice's thread.

The project's venv takes onbehalf from the wheel and borrows the suite's
venv for the dependencies only (a `.pth` line: no package index needed, and
the suite's editable onbehalf is not on that path).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from tests.support.langgraph_server import LangGraphServer, wait_ready
from tests.support.mcp_server import TicketsMcpServer
from tests.support.tokens import free_port, mint, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALICE_ONLY = {"T-1001", "T-1003"}
BOB_ONLY = {"T-1004", "T-1005"}

DOC = PROJECT_ROOT / "docs" / "adding-an-agent.md"
_FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```', re.M | re.S)


def documented_files() -> dict[str, str]:
    """The files docs/adding-an-agent.md tells a user to write, exactly as written there."""
    return {path: body for path, body in _FILE_BLOCK.findall(DOC.read_text())}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(PROJECT_ROOT)],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("onbehalf-*.whl")
    return path


@pytest.fixture(scope="module")
def project(wheel: Path, tickets_mcp_server: TicketsMcpServer,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("your-project")
    for name, text in documented_files().items():
        if name == "mcp_servers.json":  # the doc's tickets server is this suite's
            text = text.replace("http://127.0.0.1:8765/mcp", tickets_mcp_server.url)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    Path(site.stdout.strip(), "dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return root


def project_env(**extra: str) -> dict[str, str]:
    env = subprocess_env(AGENT_MODEL="offline", LANGSMITH_TRACING="false",
                         LANGCHAIN_TRACING_V2="false", LANGGRAPH_CLI_NO_ANALYTICS="1",
                         PYTHONUNBUFFERED="1", **extra)
    for name in ("MCP_SERVERS", "MCP_SERVERS_FILE", "PYTHONPATH"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[LangGraphServer]:
    port = free_port()
    log_path = project / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(project / ".venv" / "bin" / "python"), "-m", "langgraph_cli", "dev",
             "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
             "--n-jobs-per-worker", "10"],
            cwd=project, env=project_env(), stdout=log, stderr=subprocess.STDOUT)
    running = LangGraphServer(url=f"http://127.0.0.1:{port}", workdir=project,
                              log_path=log_path, process=process)
    try:
        wait_ready(running)
        yield running
    finally:
        running.stop()


def test_the_wheel_installs_only_the_onbehalf_package(wheel: Path, project: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"onbehalf"}
    python = str(project / ".venv" / "bin" / "python")
    where = subprocess.run([python, "-c", "import onbehalf; print(onbehalf.__file__)"],
                           capture_output=True, text=True, check=True, cwd=project / "..")
    assert where.stdout.startswith(str(project / ".venv")), where.stdout
    for generic in ("agents", "worker", "tickets_mcp", "notes_mcp", "auth"):
        probe = subprocess.run([python, "-c", f"import {generic}"], capture_output=True,
                               text=True, cwd=project / "..", check=False)
        assert probe.returncode != 0, f"the wheel made {generic!r} importable"


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_alice_and_bob_each_act_as_themselves_in_your_project(
    server: LangGraphServer,
) -> None:
    answers = {}
    for user in ("alice", "bob"):
        client = get_client(url=server.url, headers={"Authorization": f"Bearer {mint(user)}"})
        thread = await client.threads.create()
        state = await client.runs.wait(thread["thread_id"], "support", input=say("list_tickets"))
        answers[user] = str(state["messages"][-1]["content"])
    assert "as_user: alice" in answers["alice"]
    assert all(t in answers["alice"] for t in ALICE_ONLY)
    assert not any(t in answers["alice"] for t in BOB_ONLY)
    assert "as_user: bob" in answers["bob"]
    assert all(t in answers["bob"] for t in BOB_ONLY)
    assert not any(t in answers["bob"] for t in ALICE_ONLY)


async def test_bob_gets_404_on_alices_thread_in_your_project(server: LangGraphServer) -> None:
    alice = get_client(url=server.url, headers={"Authorization": f"Bearer {mint('alice')}"})
    thread = await alice.threads.create()
    await alice.runs.wait(thread["thread_id"], "support", input=say("whoami"))
    headers = {"Authorization": f"Bearer {mint('bob')}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as bob:
        for method, path in (("GET", ""), ("GET", "/state"), ("POST", "/history"),
                             ("GET", "/runs"), ("POST", "/runs/wait")):
            body = {"assistant_id": "support", "input": say("whoami")} if "runs" in path else {}
            response = await bob.request(method, f"/threads/{thread['thread_id']}{path}",
                                         json=body if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)


def test_the_wheels_own_cli_chats_as_the_user(server: LangGraphServer, project: Path) -> None:
    chat = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-m", "onbehalf", "chat", "--as", "alice",
         "--graph", "support", "list_tickets"],
        env=project_env(LANGGRAPH_URL=server.url), cwd=project, capture_output=True, text=True,
        timeout=120, check=False)
    assert chat.returncode == 0, chat.stderr
    assert "as_user: alice" in chat.stdout and "T-1001" in chat.stdout
    assert "T-1004" not in chat.stdout
    assert "Traceback" not in chat.stderr + server.log_text()


def test_the_documented_project_is_four_small_files() -> None:
    files = documented_files()
    assert sorted(files) == ["langgraph.json", "mcp_servers.json",
                             "src/agents/support/graph.py", "src/auth.py"]
    assert len(files["src/agents/support/graph.py"].strip().splitlines()) <= 7
    assert len(files["src/auth.py"].strip().splitlines()) == 1
    config = json.loads(files["langgraph.json"])
    ours = json.loads((PROJECT_ROOT / "langgraph.json").read_text())
    assert config["http"]["configurable_headers"] == ours["http"]["configurable_headers"]
    assert config["http"]["logging_headers"] == ours["http"]["logging_headers"]
