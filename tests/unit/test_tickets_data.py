"""Who sees which ticket: the authorization rules of the reference MCP server's data."""

from __future__ import annotations

import pytest

from onbehalf.demo.tickets.data import Ticket, TicketNotFound, TicketStore


def ids(tickets: list[Ticket]) -> list[str]:
    return [t.id for t in tickets]


def test_alice_sees_her_own_tickets_and_those_shared_with_her() -> None:
    assert ids(TicketStore().list_for("alice")) == ["T-1001", "T-1002", "T-1003", "T-1006"]


def test_bob_sees_his_own_tickets_and_those_shared_with_him() -> None:
    assert ids(TicketStore().list_for("bob")) == ["T-1002", "T-1004", "T-1005", "T-1006"]


def test_carol_sees_her_tickets_including_the_one_she_shared() -> None:
    assert ids(TicketStore().list_for("carol")) == ["T-1006", "T-1007"]


def test_an_unknown_user_has_no_tickets() -> None:
    assert TicketStore().list_for("mallory") == []


def test_status_filter_keeps_only_matching_tickets() -> None:
    store = TicketStore()
    assert ids(store.list_for("alice", "open")) == ["T-1001", "T-1002", "T-1006"]
    assert ids(store.list_for("alice", "closed")) == ["T-1003"]


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status must be one of open, closed"):
        TicketStore().list_for("alice", "pending")  # type: ignore[arg-type]


def test_shared_ticket_is_readable_by_the_user_it_is_shared_with() -> None:
    ticket = TicketStore().get_for("bob", "T-1002")
    assert ticket.owner == "alice"


def test_bob_cannot_read_alices_private_ticket() -> None:
    with pytest.raises(TicketNotFound, match="ticket T-1001 not found"):
        TicketStore().get_for("bob", "T-1001")


def test_foreign_and_missing_tickets_give_the_same_answer() -> None:
    """Not revealing existence: both errors read exactly alike."""
    store = TicketStore()
    with pytest.raises(TicketNotFound) as foreign:
        store.get_for("bob", "T-1001")
    with pytest.raises(TicketNotFound) as missing:
        store.get_for("bob", "T-9999")
    assert str(foreign.value).replace("T-1001", "X") == str(missing.value).replace("T-9999", "X")


def test_created_ticket_is_owned_by_its_creator_and_visible_only_to_them() -> None:
    store = TicketStore()
    ticket = store.create_for("erin", "Monitor flickers", "Since the last driver update.")
    assert ticket.id == "T-1008"
    assert (ticket.owner, ticket.status, ticket.shared_with) == ("erin", "open", frozenset())
    assert ids(store.list_for("erin")) == ["T-1008"]
    for other in ("alice", "bob", "carol"):
        assert "T-1008" not in ids(store.list_for(other))
        with pytest.raises(TicketNotFound):
            store.get_for(other, "T-1008")


def test_ids_keep_increasing_across_creations() -> None:
    store = TicketStore()
    first = store.create_for("alice", "one", "")
    second = store.create_for("bob", "two", "")
    assert (first.id, second.id) == ("T-1008", "T-1009")


def test_empty_title_is_refused() -> None:
    with pytest.raises(ValueError, match="title must not be empty"):
        TicketStore().create_for("alice", "   ", "body")


def test_stores_do_not_share_state() -> None:
    first, second = TicketStore(), TicketStore()
    first.create_for("alice", "only in the first store", "")
    assert len(second.list_for("alice")) == 4


def test_a_store_can_start_from_given_tickets() -> None:
    store = TicketStore([Ticket("T-5000", "dave", "Custom", "seeded by a test")])
    assert ids(store.list_for("dave")) == ["T-5000"]
    assert store.list_for("alice") == []
    assert store.create_for("dave", "next", "").id == "T-5001"


def test_ticket_wire_shape_is_json_friendly() -> None:
    data = TicketStore().get_for("alice", "T-1006").to_dict()
    assert data == {
        "id": "T-1006",
        "title": "Quarterly planning document permissions",
        "body": "Alice and Bob cannot comment on the Q3 planning document.",
        "status": "open",
        "owner": "carol",
        "shared_with": ["alice", "bob"],
    }
