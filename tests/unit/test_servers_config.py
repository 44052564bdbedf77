"""The servers file is validated up front, and every error names the server and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onbehalf.errors import ServersFileError
from onbehalf.servers import (
    NoAuth,
    OAuthAuth,
    StaticAuth,
    TokenExchangeAuth,
    UserTokenAuth,
    load_servers_config,
    parse_servers_config,
)


def parse(data: object) -> object:
    return parse_servers_config(json.dumps(data), "test")


def test_the_design_example_parses() -> None:
    config = parse({"servers": {"tickets": {
        "url": "http://127.0.0.1:8765/mcp", "transport": "streamable_http",
        "auth": {"type": "user_token"}, "tools": ["list_tickets", "get_ticket"],
        "timeout_seconds": 10,
    }}})
    server = config.servers["tickets"]
    assert isinstance(server.auth, UserTokenAuth)
    assert server.tools == ["list_tickets", "get_ticket"]


def test_every_auth_type_parses() -> None:
    config = parse({"servers": {
        "a": {"url": "http://x/mcp", "auth": {"type": "user_token", "audience": "a"}},
        "b": {"url": "http://x/mcp", "auth": {"type": "token_exchange",
              "token_url": "http://idp/token", "audience": "b", "client_id_env": "B_ID"}},
        "c": {"url": "http://x/mcp", "auth": {"type": "static", "value_env": "C_KEY"}},
        "d": {"url": "http://x/mcp", "auth": {"type": "none"}},
        "e": {"url": "http://x/mcp"},
    }})
    kinds = [type(s.auth) for s in config.servers.values()]
    assert kinds == [UserTokenAuth, TokenExchangeAuth, StaticAuth, NoAuth, UserTokenAuth]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"url": "ftp://x"}, "server 'tickets': url: must be an http(s) URL"),
        ({"url": "http://x/mcp", "timeout_seconds": 0}, "server 'tickets': timeout_seconds"),
        ({"url": "http://x/mcp", "auth": {"type": "magic"}}, "server 'tickets': auth"),
        ({"url": "http://x/mcp", "auth": {"type": "static"}}, "auth.value_env"),
        ({"url": "http://x/mcp", "tools": "list_tickets"}, "server 'tickets': tools"),
        ({"url": "http://x/mcp", "colour": "red"}, "server 'tickets': colour"),
        ({"url": "http://x/mcp", "headers": {"Authorization": "Bearer s"}}, "use 'auth'"),
        ({"url": "http://x/mcp", "transport": "stdio"}, "server 'tickets': transport"),
        ({"url": "http://x/mcp", "auth": {"type": "oauth", "scopes": ["repo read"]}},
         "not a valid OAuth scope"),
        ({"url": "http://x/mcp", "auth": {"type": "oauth", "client_secret_env": "GH_SECRET"}},
         "client_secret_env needs client_id_env"),
        ({"url": "http://x/mcp", "auth": {"type": "oauth", "client_id": "abc"}},
         "auth.client_id: Extra inputs"),
    ],
)
def test_errors_name_the_server_and_the_key(entry: dict[str, object], expected: str) -> None:
    with pytest.raises(ServersFileError) as info:
        parse({"servers": {"tickets": entry}})
    assert expected in str(info.value)


def test_an_oauth_server_parses() -> None:
    config = parse({"servers": {"github": {"url": "https://api.githubcopilot.com/mcp/", "auth": {
        "type": "oauth", "scopes": ["repo", "read:org"], "description": "your GitHub repos",
        "client_id_env": "GITHUB_CLIENT_ID", "client_secret_env": "GITHUB_CLIENT_SECRET"}}}})
    auth = config.servers["github"].auth
    assert isinstance(auth, OAuthAuth)
    assert auth.scopes == ["repo", "read:org"] and auth.client_id_env == "GITHUB_CLIENT_ID"
    bare = parse({"servers": {"linear": {"url": "https://mcp.linear.app/mcp",
                                         "auth": {"type": "oauth"}}}}).servers["linear"].auth
    assert isinstance(bare, OAuthAuth) and bare.scopes is None and bare.client_id_env is None


def test_not_json_names_the_line() -> None:
    with pytest.raises(ServersFileError, match="line 1"):
        parse_servers_config("{nope", "MCP_SERVERS")


def test_missing_servers_key() -> None:
    with pytest.raises(ServersFileError, match="'servers'"):
        parse({"tickets": {}})


def test_bad_server_name() -> None:
    with pytest.raises(ServersFileError, match="server name"):
        parse({"servers": {"bad name!": {"url": "http://x/mcp"}}})


def test_inline_setting_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "servers.json"
    file.write_text(json.dumps({"servers": {"fromfile": {"url": "http://f/mcp"}}}))
    monkeypatch.setenv("MCP_SERVERS_FILE", str(file))
    assert list(load_servers_config().servers) == ["fromfile"]
    monkeypatch.setenv("MCP_SERVERS", json.dumps({"servers": {"inline": {"url": "http://i/mcp"}}}))
    assert list(load_servers_config().servers) == ["inline"]


def test_missing_file_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SERVERS_FILE", "/nonexistent/servers.json")
    with pytest.raises(ServersFileError, match="MCP_SERVERS_FILE"):
        load_servers_config()


def test_the_shipped_servers_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = parse_servers_config((root / "mcp_servers.json").read_text(), "mcp_servers.json")
    assert "tickets" in config.servers
