"""The tickets and who may see them: the per-user authorization the MCP server enforces.

Every read and write takes the *verified* subject of the caller's token; no
function here accepts an identity from anywhere else. A user sees a ticket
they own or one shared with them. Asking for any other ticket, existing or
not, gives the same `TicketNotFound`, so nobody can probe for other users'
ticket ids.

The store is in memory and seeded deterministically so that tests (and a
developer acting as `alice` or `bob`) can rely on exact ids and contents.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

TicketStatus = Literal["open", "closed"]
STATUSES: tuple[TicketStatus, ...] = ("open", "closed")


class TicketNotFound(LookupError):
    """The ticket does not exist *for this user* (it may exist for someone else)."""

    def __init__(self, ticket_id: str) -> None:
        super().__init__(f"ticket {ticket_id} not found")
        self.ticket_id = ticket_id


@dataclass(frozen=True)
class Ticket:
    """One support ticket; `shared_with` lists the users besides the owner who may read it."""

    id: str
    owner: str
    title: str
    body: str
    status: TicketStatus = "open"
    shared_with: frozenset[str] = field(default_factory=frozenset)

    def visible_to(self, user: str) -> bool:
        return user == self.owner or user in self.shared_with

    def override(self, **changes: Any) -> Ticket:
        """A copy with some fields changed (tickets are never mutated in place)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape a tool returns (JSON-friendly, stable key order)."""
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "status": self.status,
            "owner": self.owner,
            "shared_with": sorted(self.shared_with),
        }


def seed_tickets() -> list[Ticket]:
    """The fixed starting data: private tickets for alice, bob and carol, and two shared ones.

    Visibility that tests rely on:
    alice: T-1001, T-1002, T-1003, T-1006 · bob: T-1002, T-1004, T-1005, T-1006 ·
    carol: T-1006, T-1007 · anyone else: nothing.
    """
    return [
        Ticket("T-1001", "alice", "VPN drops every hour",
               "The VPN client disconnects roughly every 60 minutes since Monday."),
        Ticket("T-1002", "alice", "Expense report stuck in approval",
               "Report EXP-77 has been waiting for approval for two weeks.",
               shared_with=frozenset({"bob"})),
        Ticket("T-1003", "alice", "Replace swollen laptop battery",
               "The battery of my laptop is visibly swollen.", status="closed"),
        Ticket("T-1004", "bob", "Printer on floor 3 jams",
               "The printer next to the kitchen jams on every duplex job."),
        Ticket("T-1005", "bob", "Access to the billing dashboard",
               "I need read access to the billing dashboard for the audit.", status="closed"),
        Ticket("T-1006", "carol", "Quarterly planning document permissions",
               "Alice and Bob cannot comment on the Q3 planning document.",
               shared_with=frozenset({"alice", "bob"})),
        Ticket("T-1007", "carol", "Onboarding checklist for a new hire",
               "Prepare accounts and a laptop for the new hire starting next month."),
    ]


class TicketStore:
    """In-memory tickets with the visibility rule applied on every access.

    Not thread-safe by design: the server runs on one event loop and no
    method awaits, so each call is atomic there.
    """

    def __init__(self, tickets: Iterable[Ticket] | None = None) -> None:
        initial = seed_tickets() if tickets is None else list(tickets)
        self._tickets: dict[str, Ticket] = {t.id: t for t in initial}
        numbers = [int(t.id.removeprefix("T-")) for t in initial if t.id[2:].isdigit()]
        self._next_number = itertools.count(max(numbers, default=1000) + 1)

    def list_for(self, user: str, status: TicketStatus | None = None) -> list[Ticket]:
        """The tickets `user` may see, optionally only those with `status`, in id order."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        return [
            t for t in sorted(self._tickets.values(), key=lambda t: t.id)
            if t.visible_to(user) and (status is None or t.status == status)
        ]

    def get_for(self, user: str, ticket_id: str) -> Ticket:
        """The ticket if `user` may see it; otherwise TicketNotFound, whether it exists or not."""
        ticket = self._tickets.get(ticket_id.strip())
        if ticket is None or not ticket.visible_to(user):
            raise TicketNotFound(ticket_id)
        return ticket

    def create_for(self, user: str, title: str, body: str) -> Ticket:
        """A new open ticket owned by `user` and shared with nobody."""
        if not title.strip():
            raise ValueError("title must not be empty")
        ticket = Ticket(f"T-{next(self._next_number)}", user, title.strip(), body)
        self._tickets[ticket.id] = ticket
        return ticket
