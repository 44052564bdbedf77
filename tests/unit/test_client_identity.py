"""onbehalf's client identity (DESIGN.md §8.1): its metadata document, when it is used,
and what production refuses at start.

The flows themselves, against a real AS: tests/integration/test_oauth_client_identity.py.
"""

from __future__ import annotations

import json

import pytest
from mcp.shared.auth import OAuthMetadata

from onbehalf.oauth.accounts import ClientInfo, _metadata_document_client
from onbehalf.oauth.client_metadata import client_metadata, client_metadata_document
from onbehalf.oauth.discovery import AuthorizationServer
from onbehalf.production import enforce_production_settings
from onbehalf.settings import OAuthSettings, SettingsError
from tests.unit.test_production_settings import GOOD, OAUTH

PUBLIC = "https://agents.example.com"
DOCUMENT = f"{PUBLIC}/oauth/client-metadata.json"


def settings(public: str | None = PUBLIC, *, production: bool = True) -> OAuthSettings:
    return OAuthSettings(onbehalf_public_url=public,
                         onbehalf_env="production" if production else "")


def authorization_server(issuer: str = "https://auth.example.com", *, documents: bool = True,
                         methods: list[str] | None = None) -> AuthorizationServer:
    metadata = OAuthMetadata(
        issuer=issuer, authorization_endpoint=f"{issuer}/authorize",  # type: ignore[arg-type]
        token_endpoint=f"{issuer}/token",  # type: ignore[arg-type]
        code_challenge_methods_supported=["S256"], token_endpoint_auth_methods_supported=methods,
        client_id_metadata_document_supported=documents or None,
    )
    return AuthorizationServer(resource="https://mcp.example.com/mcp", issuer=issuer,
                               metadata=metadata, scope=None, discovered_at=0.0)


def test_the_document_is_built_from_the_public_url_alone_the_same_bytes_each_time() -> None:
    first, second = client_metadata_document(settings()), client_metadata_document(settings())
    assert first == second
    assert json.loads(first) == {
        "client_id": DOCUMENT,
        "redirect_uris": [f"{PUBLIC}/oauth/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "onbehalf",
        "application_type": "web",
    }
    assert first.startswith(b'{"client_id":')


def test_a_registration_sends_the_same_metadata_as_a_web_application() -> None:
    sent = client_metadata(f"{PUBLIC}/oauth/callback", auth_method="client_secret_basic",
                           scope="read").model_dump(mode="json", exclude_none=True)
    document = json.loads(client_metadata_document(settings()))
    assert sent["application_type"] == "web"
    assert {k: v for k, v in sent.items() if k not in ("token_endpoint_auth_method", "scope")} == {
        k: v for k, v in document.items() if k not in ("client_id", "token_endpoint_auth_method")}


@pytest.mark.parametrize(("public", "documents", "methods", "used"), [
    (PUBLIC, True, None, True),
    (PUBLIC, True, ["client_secret_basic", "none"], True),
    (PUBLIC, False, None, False),  # the AS does not fetch documents: register
    (PUBLIC, True, ["client_secret_basic"], False),  # no public clients there: register
])
def test_the_document_is_onbehalfs_client_id_where_the_authorization_server_fetches_them(
    public: str, documents: bool, methods: list[str] | None, used: bool
) -> None:
    found = _metadata_document_client(
        authorization_server(documents=documents, methods=methods), settings(public))
    assert found == (ClientInfo(DOCUMENT, None, "none") if used else None)


def test_in_dev_a_loopback_document_is_used_only_by_an_authorization_server_on_loopback() -> None:
    dev = settings("http://127.0.0.1:2024", production=False)
    local = _metadata_document_client(authorization_server("http://127.0.0.1:8766"), dev)
    assert local == ClientInfo("http://127.0.0.1:2024/oauth/client-metadata.json", None, "none")
    assert _metadata_document_client(authorization_server(), dev) is None  # it cannot fetch it


@pytest.mark.parametrize(("public", "named"), [
    ("http://agents.example.com", "not an https URL"),
    ("https://user:secret@agents.example.com", "user name or password"),
    ("https://agents.example.com/#top", "query or a fragment"),
    ("https://agents.example.com/?tenant=1", "query or a fragment"),
    ("https://agents.example.com/a/../b", "'.' or '..' segments"),
    ("https://Agents.Example.com", "https://agents.example.com/oauth/callback"),
])
def test_production_refuses_a_public_url_that_cannot_carry_the_document(
    public: str, named: str
) -> None:
    with pytest.raises(SettingsError, match="ONBEHALF_PUBLIC_URL") as refused:
        enforce_production_settings({**GOOD, **OAUTH, "ONBEHALF_PUBLIC_URL": public})
    assert named in str(refused.value)
    with pytest.raises(SettingsError, match="ONBEHALF_PUBLIC_URL"):
        client_metadata_document(settings(public))  # the route would not serve it either


def test_production_accepts_a_public_url_under_a_path() -> None:
    enforce_production_settings({**GOOD, **OAUTH, "ONBEHALF_PUBLIC_URL": f"{PUBLIC}/agents"})


def test_without_a_public_url_production_has_no_document_and_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="ONBEHALF_PUBLIC_URL is not set"):
        client_metadata_document(settings(None))
    with pytest.raises(SettingsError, match="ONBEHALF_PUBLIC_URL is not set"):
        enforce_production_settings({**GOOD, **OAUTH, "ONBEHALF_PUBLIC_URL": ""})
