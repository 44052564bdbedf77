"""A user's thread through the LangGraph SDK, as the e2e tests drive it: send or resume,
then read where the thread stands (its one pause, the model's last answer)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
from langgraph_sdk.client import LangGraphClient

from tests.support.tokens import mint


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(user)}"}


async def ask(client: LangGraphClient, thread_id: str, text: str = "",
              resume: Any = None) -> dict[str, Any]:
    """Send `text` (or resume with `resume`) on the assistant; the thread's state after."""
    body: dict[str, Any] = {"command": {"resume": resume}} if resume is not None else {
        "input": {"messages": [{"role": "user", "content": text}]}}
    await client.runs.wait(thread_id, "assistant", **body)
    return await client.threads.get_state(thread_id)


def pause_of(state: dict[str, Any]) -> dict[str, Any]:
    """The value of the one interrupt the thread is paused on."""
    values = [i["value"] for task in state.get("tasks", []) for i in task.get("interrupts", [])]
    assert len(values) == 1, state["values"].get("messages", [])[-3:]
    return values[0]


def last_text(state: dict[str, Any]) -> str:
    content = state["values"]["messages"][-1]["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


async def worker_run(env: dict[str, str], user: str, execution: str, message: str
                     ) -> subprocess.CompletedProcess[bytes]:
    """`onbehalf handoff put` with `user`'s token, then `onbehalf worker run` on `message`."""
    with anyio.fail_after(90):
        put = await anyio.run_process(
            [sys.executable, "-m", "onbehalf", "handoff", "put", execution],
            input=mint(user).encode(), env=env, check=False)
        assert put.returncode == 0, put.stderr
        return await anyio.run_process(
            [sys.executable, "-m", "onbehalf", "worker", "run", "--execution-id", execution,
             message], env=env, check=False)


async def printed_link(stream: Any, prefix: str) -> str:
    """Read a command's output until it prints a line starting with `prefix` (a link)."""
    printed = ""
    async for chunk in stream:  # the message, then the link on its own line
        printed += chunk.decode()
        link = next((line for line in printed.splitlines() if line.startswith(prefix)), None)
        if link:
            return link
    raise AssertionError(f"no line starting with {prefix!r} in:\n{printed}")
