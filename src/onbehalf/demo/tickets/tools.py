"""The MCP tools of the tickets server, and the one place that says who is calling.

Identity comes only from the verified access token of the HTTP request that
carried the tool call (`caller`), never from tool arguments. It is read from
that request rather than from the SDK's `get_access_token()`: under stateful
streamable HTTP a tool runs in the session's own task, whose context was
copied when the session opened, so the contextvar would show the token that
*opened* the session, not the one presented with this call (DESIGN.md §7:
"the exact token, on every request").

Tool docstrings are the descriptions a model reads when choosing a tool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from onbehalf.demo.tickets.data import TicketNotFound, TicketStatus, TicketStore
from onbehalf.demo.tickets.sessions import ServerStats
from onbehalf.demo.tickets.verifier import token_sha256

WRITE_SCOPE = "tickets:write"

_READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def caller(ctx: Context[Any, Any, Any]) -> AccessToken:
    """The verified token of the request that carried this tool call, or a tool error."""
    request = ctx.request_context.request
    user = request.scope.get("user") if request is not None else None
    if not isinstance(user, AuthenticatedUser):
        raise ToolError(
            "this tool needs a signed-in user: send 'Authorization: Bearer <your JWT>'"
        )
    return user.access_token


class TicketsMCP(FastMCP[Any]):
    """FastMCP that counts every tool call for `get_health`."""

    def __init__(self, stats: ServerStats, **settings: Any) -> None:
        super().__init__(**settings)
        self.stats = stats

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        self.stats.tool_called()
        return await super().call_tool(name, arguments)


def build_mcp(store: TicketStore, stats: ServerStats, *, host: str = "127.0.0.1") -> TicketsMCP:
    """The MCP server with its tools bound to `store` (`host` decides DNS-rebinding protection)."""
    mcp = TicketsMCP(
        stats,
        name="tickets",
        instructions=(
            "Support tickets of the signed-in user: tickets they own and tickets others "
            "shared with them. Call list_tickets before get_ticket if you do not know an id."
        ),
        host=host,
        log_level="WARNING",
        # Sessions end only when their client closes them (or the server stops),
        # so `sessions_active` counts exactly the sessions clients left open.
        session_idle_timeout=None,
    )

    @_tool(mcp, _READ_ONLY)
    async def whoami(ctx: Context[Any, Any, Any]) -> dict[str, Any]:
        """Show who this server believes the caller is: the user id (`sub`), the scopes
        granted, and a sha256 fingerprint of the access token received. Use it to check
        which account the other tools will act as."""
        token = caller(ctx)
        return {
            "sub": token.client_id,
            "as_user": token.client_id,
            "scopes": token.scopes,
            "token_sha256": token_sha256(token.token),
        }

    @_tool(mcp, _READ_ONLY)
    async def list_tickets(
        ctx: Context[Any, Any, Any],
        status: Annotated[
            TicketStatus | None,
            Field(description="Only tickets with this status; omit for all tickets."),
        ] = None,
    ) -> dict[str, Any]:
        """List the support tickets the signed-in user can see: the ones they own and the
        ones shared with them. Each ticket has an id (like T-1001), title, body, status
        (open or closed), owner and shared_with. Filter with status="open" or "closed"."""
        user = caller(ctx).client_id
        tickets = store.list_for(user, status)
        return {
            "as_user": user,
            "status": status,
            "count": len(tickets),
            "tickets": [t.to_dict() for t in tickets],
        }

    @_tool(mcp, _READ_ONLY)
    async def get_ticket(
        ctx: Context[Any, Any, Any],
        ticket_id: Annotated[str, Field(description="The ticket id, for example T-1001.")],
    ) -> dict[str, Any]:
        """Get one support ticket by id, with its full body. Only tickets the signed-in user
        owns or that are shared with them can be read; any other id is reported as not
        found."""
        user = caller(ctx).client_id
        try:
            ticket = store.get_for(user, ticket_id)
        except TicketNotFound as exc:
            raise ToolError(str(exc)) from None
        return {"as_user": user, "ticket": ticket.to_dict()}

    @_tool(mcp, ToolAnnotations(destructiveHint=False, openWorldHint=False))
    async def create_ticket(
        ctx: Context[Any, Any, Any],
        title: Annotated[
            str, Field(description="A short summary of the problem.", max_length=200)
        ],
        body: Annotated[
            str,
            Field(description="The details: what happened, what is needed.", max_length=10_000),
        ],
    ) -> dict[str, Any]:
        """Open a new support ticket owned by the signed-in user (visible only to them).
        Requires the tickets:write scope. Returns the created ticket with its new id."""
        token = caller(ctx)
        if WRITE_SCOPE not in token.scopes:
            raise ToolError(
                f"missing scope {WRITE_SCOPE}: this token may read tickets but not create them; "
                f"sign in again with the {WRITE_SCOPE} scope"
            )
        try:
            ticket = store.create_for(token.client_id, title, body)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return {"as_user": token.client_id, "ticket": ticket.to_dict()}

    @_tool(mcp, _READ_ONLY)
    async def get_health() -> dict[str, Any]:
        """Check that the tickets server is up. Needs no sign-in and returns no user data:
        status, sessions opened since start, sessions still open, tool calls served."""
        return {"status": "ok", **stats.snapshot()}

    return mcp


def _tool(mcp: FastMCP[Any], annotations: ToolAnnotations) -> Callable[[_Fn], _Fn]:
    """Register `fn` as a tool whose description is its docstring as one clean paragraph."""

    def register(fn: _Fn) -> _Fn:
        mcp.add_tool(fn, description=" ".join((fn.__doc__ or "").split()), annotations=annotations)
        return fn

    return register
