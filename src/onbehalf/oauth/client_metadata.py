"""What onbehalf says about itself to an authorization server, and its Client ID Metadata Document.

The MCP authorization spec (2025-11-25) lets a client with no registration use an
https URL as its `client_id`: an authorization server that advertises
`client_id_metadata_document_supported` fetches the JSON document at that URL
(draft-ietf-oauth-client-id-metadata-document) instead of having the client
register. onbehalf serves its own at `{ONBEHALF_PUBLIC_URL}/oauth/client-metadata.json`.

The document is built from settings alone, never from the request, so it is the same
bytes on every request and on every replica: authorization servers cache it, and one
that saw it change would have reason to stop trusting it. A registration (RFC 7591)
sends the same metadata, but for `client_id`, and with the secret-bearing
authentication method chosen for that server.
"""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import urlsplit

from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl, ValidationError

from onbehalf.settings import OAuthSettings, SettingsError

CLIENT_METADATA_PATH = "/oauth/client-metadata.json"
CACHE_CONTROL = "public, max-age=3600"
"""Authorization servers may keep the document an hour (it changes only with the settings)."""


class ClientMetadata(OAuthClientMetadata):
    """RFC 7591 client metadata with OpenID's `application_type`, which the `mcp` model lacks."""

    application_type: Literal["web", "native"] | None = None


def client_metadata(redirect_uri: str, *, auth_method: str,
                    scope: str | None = None) -> ClientMetadata:
    """onbehalf as a client: a web application with one redirect URI and refresh tokens."""
    return ClientMetadata(
        redirect_uris=[AnyUrl(redirect_uri)],
        token_endpoint_auth_method=auth_method,  # type: ignore[arg-type]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        client_name="onbehalf",
        scope=scope,
        application_type="web",
    )


def client_id_url(settings: OAuthSettings) -> str:
    """The document's URL, which is onbehalf's `client_id` wherever the document is used.

    SettingsError names ONBEHALF_PUBLIC_URL when the URL cannot be a client_id (the
    draft's §3 rules, and https in production)."""
    url = f"{settings.public_url}{CLIENT_METADATA_PATH}"
    parts = urlsplit(url)
    problem = (
        "it is not an http(s) URL" if parts.scheme not in ("https", "http") or not parts.hostname
        else "it is not https" if settings.production and parts.scheme != "https"
        else "it carries a user name or password" if parts.username or parts.password
        else "it has a query or a fragment" if parts.query or parts.fragment or "#" in url
        else "its path has '.' or '..' segments" if {".", ".."} & set(parts.path.split("/"))
        else None
    )
    redirect_uri = settings.redirect_uri
    if problem is None and _normalised(redirect_uri) != redirect_uri:
        problem = (f"authorization servers would compare the redirect URI as "
                   f"{_normalised(redirect_uri)}: write ONBEHALF_PUBLIC_URL that way")
    if problem:
        raise SettingsError(
            f"ONBEHALF_PUBLIC_URL={settings.public_url!r} cannot carry onbehalf's client "
            f"metadata document ({url}): {problem}"
        )
    return url


def client_metadata_document(settings: OAuthSettings) -> bytes:
    """The document's exact bytes: `client_id` first, then the metadata, in a fixed order."""
    metadata = client_metadata(settings.redirect_uri, auth_method="none")
    document = {"client_id": client_id_url(settings),
                **metadata.model_dump(mode="json", exclude_none=True)}
    return json.dumps(document, separators=(",", ":")).encode()


def _normalised(url: str) -> str | None:
    try:
        return str(AnyUrl(url))
    except ValidationError:
        return None
