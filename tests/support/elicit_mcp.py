"""A real MCP server (FastMCP, streamable HTTP) whose tools ask the user something.

Every tool counts its executions (`executed[tool]`: the tool's body ran), so a test
can tell that a pause never made a call run twice:

- `list_files`: needs a URL visit first. Until the user has been at the URL it answers
  tools/call with the error -32042 (URL elicitation required) and runs nothing; the
  "browser" is the test, which GETs the URL (`visited`).
- `link_account`: asks for a URL visit during the call (`elicitation/create`, URL mode).
- `pick_repository`: asks "which repository?" (form mode); declares `readOnlyHint`.
- `delete_branch`: asks for a confirmation (form mode) and is neither read-only nor
  idempotent: it must never be sent twice.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from mcp.shared.exceptions import UrlElicitationRequiredError
from mcp.types import ElicitRequestURLParams, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port


class Repository(BaseModel):
    repository: str = Field(description="owner/name of the repository")
    private: bool = Field(default=False, description="only private repositories")


class Confirmation(BaseModel):
    confirm: bool = Field(description="really delete the branch")


class ElicitMcpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.executed: Counter[str] = Counter()
        self.visited: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def visit_url(self, elicitation_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/visit/{elicitation_id}"

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "auth": {"type": "none"}, "timeout_seconds": 10, **extra}

    def build(self) -> FastMCP[Any]:
        mcp: FastMCP[Any] = FastMCP(name="asks", host="127.0.0.1", log_level="WARNING")

        @mcp.custom_route("/visit/{elicitation_id}", methods=["GET"])
        async def visit(request: Request) -> PlainTextResponse:
            self.visited.add(request.path_params["elicitation_id"])
            return PlainTextResponse("thanks, you can go back to the chat")

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        async def list_files() -> str:
            """List the files of the file store (needs a sign-in at the store first)."""
            if "files" not in self.visited:
                raise UrlElicitationRequiredError([ElicitRequestURLParams(
                    message="Sign in to the file store", url=self.visit_url("files"),
                    elicitationId="files")])
            self.executed["list_files"] += 1
            return "files: a.txt b.txt"

        @mcp.tool()
        async def link_account(ctx: Context[Any, Any, Any]) -> str:
            """Link the user's billing account."""
            self.executed["link_account"] += 1
            answer = await ctx.elicit_url("Link your billing account", self.visit_url("billing"),
                                          "billing")
            return f"link_account: {answer.action}"

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        async def pick_repository(ctx: Context[Any, Any, Any]) -> str:
            """Pick the repository to look at."""
            self.executed["pick_repository"] += 1
            answer = await ctx.elicit("Which repository?", Repository)
            if answer.action != "accept":
                return f"no repository picked ({answer.action})"
            return f"picked {answer.data.repository} (private={answer.data.private})"

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=False,
                                              destructiveHint=True))
        async def delete_branch(branch: str, ctx: Context[Any, Any, Any]) -> str:
            """Delete a branch (asks for a confirmation)."""
            self.executed["delete_branch"] += 1
            answer = await ctx.elicit(f"Delete {branch}?", Confirmation)
            if answer.action == "accept" and answer.data.confirm:
                return f"deleted {branch}"
            return f"kept {branch} ({answer.action})"

        return mcp


@contextlib.contextmanager
def run_elicit_mcp() -> Iterator[ElicitMcpServer]:
    server = ElicitMcpServer()
    with serve_in_thread(server.build().streamable_http_app(), server.port):
        yield server
