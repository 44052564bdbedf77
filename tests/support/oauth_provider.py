"""The demo notes server (`onbehalf.demo.notes`) on two loopback origins, as the suite uses it.

The authorization server and the MCP resource server are the ones `make dev`
runs (`onbehalf notes-mcp`); here they are served apart, on two free ports,
because hosted servers keep their AS on another origin than the MCP endpoint,
and `approve_url` consents as an account without a browser. With
`client_id_metadata_documents=True` the AS advertises Client ID Metadata Documents
and fetches them (as `make dev` runs it); without, it knows registered clients only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx

from onbehalf.demo.notes.server import (
    NOTES,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    NotesWorld,
    as_app,
    rs_app,
)
from tests.support.asgi_server import serve_in_thread
from tests.support.tokens import free_port, mint

__all__ = ["NOTES", "TEST_CLIENT_ID", "TEST_CLIENT_SECRET", "OAuthWorld", "consent_and_confirm",
           "oauth_world"]


class OAuthWorld(NotesWorld):
    """The running AS and RS, what they saw, and a consent step for tests."""

    def approve_url(self, authorize_url: str, account: str, *, allow: bool = True) -> str:
        """Consent as `account` with httpx; the redirect back to the client, not followed."""
        with httpx.Client(timeout=10) as http:
            page = http.get(authorize_url)
            assert page.status_code == 302, page.text
            consent = page.headers["location"]
            request_id = parse_qs(urlsplit(consent).query)["req"][0]
            answer = http.post(f"{self.as_url}/consent", data={
                "req": request_id, "account": account, "decision": "allow" if allow else "deny"})
            assert answer.status_code == 302, answer.text
            return answer.headers["location"]


async def consent_and_confirm(world: OAuthWorld, onbehalf: httpx.AsyncClient, link: str,
                              user: str) -> httpx.Response:
    """The person's part against onbehalf (`onbehalf`'s base URL is its public URL): consent
    at the AS as `user`, land on the callback, confirm signed in as `user`."""
    location = await asyncio.to_thread(world.approve_url, link, user)
    public = str(onbehalf.base_url).rstrip("/")
    assert location.startswith(f"{public}/oauth/callback?"), location
    landed = await onbehalf.get(location.removeprefix(public))
    assert landed.status_code == 303, landed.text
    query = parse_qs(urlsplit(landed.headers["location"]).query)
    return await onbehalf.post(f"/oauth/flows/{query['flow'][0]}/confirm",
                               json={"confirm": query["confirm"][0]},
                               headers={"Authorization": f"Bearer {mint(user)}"})


@contextmanager
def oauth_world(*, hostile_resource_metadata: str | None = None, issue_iss: bool = True,
                access_ttl: int = 3600, redirect_uri: str | None = None,
                client_id_metadata_documents: bool = False) -> Iterator[OAuthWorld]:
    """Start the AS and the RS on free loopback ports for the duration of the block."""
    as_port, rs_port = free_port(), free_port()
    world = OAuthWorld(
        as_url=f"http://127.0.0.1:{as_port}", mcp_url=f"http://127.0.0.1:{rs_port}/mcp",
        access_ttl=access_ttl, issue_iss=issue_iss,
        hostile_resource_metadata=hostile_resource_metadata,
        client_id_metadata_documents=client_id_metadata_documents,
    )
    if redirect_uri:
        world.register_test_client(redirect_uri)
    with serve_in_thread(as_app(world), as_port), serve_in_thread(rs_app(world), rs_port):
        yield world
