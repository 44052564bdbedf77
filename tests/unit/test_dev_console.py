"""The dev console (DESIGN.md §9): 404 unless asked for; the token route is loopback-only."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from onbehalf.http_app import app
from onbehalf.production import production_problems

ROUTES = [("GET", "/console"), ("GET", "/console/static/console.js"),
          ("POST", "/console/api/token")]


def _client(host: str = "127.0.0.1") -> TestClient:
    return TestClient(app, client=(host, 50000))


@pytest.mark.parametrize("setting", [None, "0", "", "yes", "true"])
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_off_unless_set_to_1(monkeypatch, setting, method, path) -> None:
    monkeypatch.delenv("ONBEHALF_DEV_CONSOLE", raising=False)
    if setting is not None:
        monkeypatch.setenv("ONBEHALF_DEV_CONSOLE", setting)
    resp = _client().request(method, path, json={"user": "alice"} if method == "POST" else None)
    assert resp.status_code == 404
    assert "token" not in resp.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_off_in_production_even_when_set(monkeypatch, method, path) -> None:
    monkeypatch.setenv("ONBEHALF_DEV_CONSOLE", "1")
    monkeypatch.setenv("ONBEHALF_ENV", "production")
    resp = _client().request(method, path, json={"user": "alice"} if method == "POST" else None)
    assert resp.status_code == 404


def test_production_refusal_names_the_setting() -> None:
    problems = production_problems({"ONBEHALF_ENV": "production", "ONBEHALF_DEV_CONSOLE": "1"})
    assert any("ONBEHALF_DEV_CONSOLE" in p for p in problems)
    assert not any("ONBEHALF_DEV_CONSOLE" in p for p in production_problems({}))


@pytest.fixture
def console_on(monkeypatch) -> None:
    monkeypatch.setenv("ONBEHALF_DEV_CONSOLE", "1")


def test_page_and_assets_are_served(console_on) -> None:
    client = _client()
    page = client.get("/console")
    assert page.status_code == 200 and "console.js" in page.text
    assert "'self'" in page.headers["content-security-policy"]
    assert client.get("/console/static/console.js").headers["content-type"].startswith(
        "text/javascript")
    assert client.get("/console/static/../__init__.py").status_code == 404
    assert client.get("/console/static/index.html").status_code == 404


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "127.0.0.2"])
def test_loopback_client_gets_a_token_the_server_accepts(console_on, host) -> None:
    from onbehalf.jwt_auth import JwtVerifier
    from onbehalf.settings import auth_settings

    resp = _client(host).post("/console/api/token",
                              json={"user": "alice", "scopes": ["tickets:read"]})
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    claims = JwtVerifier(auth_settings()).verify_sync(resp.json()["token"])
    assert claims.subject == "alice"
    assert claims.permissions == ["tickets:read"]


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.2", "testclient", "2001:db8::1"])
def test_non_loopback_client_is_refused(console_on, host) -> None:
    resp = _client(host).post("/console/api/token", json={"user": "alice"})
    assert resp.status_code == 403
    assert "eyJ" not in resp.text


@pytest.mark.parametrize(("name", "value"), [
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-For", "127.0.0.1, 203.0.113.9"),
    ("X-Real-IP", "203.0.113.9"),
    ("Forwarded", "for=203.0.113.9"),
    ("X-Forwarded-For", "not-an-ip"),
])
def test_proxied_request_from_elsewhere_is_refused(console_on, name, value) -> None:
    resp = _client().post("/console/api/token", json={"user": "alice"}, headers={name: value})
    assert resp.status_code == 403


@pytest.mark.parametrize("body", [{"user": ""}, {"user": "a b"}, {"user": "x" * 65},
                                  {"user": "alice", "scopes": "tickets:read"},
                                  {"user": "alice", "ttl": 0}, {"user": "alice", "ttl": True},
                                  ["alice"]])
def test_bad_sign_in_requests_are_refused(console_on, body) -> None:
    assert _client().post("/console/api/token", json=body).status_code == 400


def test_another_site_in_the_developers_browser_cannot_mint_a_token(console_on) -> None:
    # the browser is on loopback too; only the console's own page may sign in
    resp = _client().post("/console/api/token", json={"user": "alice"},
                          headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
    assert "token" not in resp.json()
    own = _client().post("/console/api/token", json={"user": "alice"},
                         headers={"Origin": "http://testserver"})
    assert own.status_code == 200
