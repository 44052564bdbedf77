"""`ticket_triage`: read-only; the graph's own allowlist narrows the servers file."""

from onbehalf.mcp import build_mcp_agent

graph = build_mcp_agent(
    name="ticket_triage",
    system_prompt=(
        "You triage support tickets for the signed-in user. You can only read tickets: "
        "list them, look at one, and summarise what needs attention."
    ),
    tools=["list_tickets", "get_ticket"],
)
