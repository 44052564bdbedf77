"""ONBEHALF_ENV=production refuses a dev-only configuration, naming every variable at fault."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onbehalf.production import enforce_production_settings
from onbehalf.settings import SettingsError

GOOD = {
    "ONBEHALF_ENV": "production",
    "TOKEN_SEALING_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json",
    "AUTH_JWT_ISSUER": "https://idp.example/",
    "AUTH_JWT_AUDIENCE": "onbehalf-api",
    "AGENT_MODEL": "openai:gpt-4.1-mini",
    "MCP_SERVERS": json.dumps({"servers": {"tickets": {"url": "https://mcp.example/mcp"}}}),
}


def servers(url: str) -> str:
    return json.dumps({"servers": {"tickets": {"url": url}}})


def test_a_production_configuration_passes() -> None:
    enforce_production_settings(GOOD)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"TOKEN_SEALING_KEY": ""}, "TOKEN_SEALING_KEY"),
        ({"AUTH_JWT_ISSUER": ""}, "AUTH_JWT_ISSUER"),
        ({"AUTH_JWT_AUDIENCE": ""}, "AUTH_JWT_AUDIENCE"),
        ({"AUTH_JWT_SECRET": "short-dev-secret"}, "AUTH_JWT_SECRET"),
        ({"AGENT_MODEL": "offline"}, "AGENT_MODEL is 'offline'"),
        ({"AGENT_MODEL": ""}, "AGENT_MODEL is 'offline'"),
        ({"MCP_SERVERS": ""}, "repository's dev servers file"),
        ({"MCP_SERVERS": servers("http://127.0.0.1:8765/mcp")}, "'tickets' is on loopback"),
        ({"MCP_SERVERS": servers("http://localhost:8765/mcp")}, "'tickets' is on loopback"),
        ({"MCP_SERVERS": servers("http://[::1]:8765/mcp")}, "'tickets' is on loopback"),
    ],
)
def test_dev_only_settings_are_refused(change: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        enforce_production_settings({**GOOD, **change})


OAUTH = {
    "MCP_SERVERS": json.dumps({"servers": {"github": {
        "url": "https://api.githubcopilot.com/mcp/", "auth": {"type": "oauth"}}}}),
    "ONBEHALF_PUBLIC_URL": "https://agents.example.com",
    "OAUTH_CONFIRM_URL": "https://app.example.com/connect/confirm",
}


def test_an_oauth_deployment_passes() -> None:
    enforce_production_settings({**GOOD, **OAUTH})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"ONBEHALF_PUBLIC_URL": ""}, "ONBEHALF_PUBLIC_URL is not set"),
        ({"ONBEHALF_PUBLIC_URL": "http://agents.example.com"}, "is not an https URL"),
        ({"OAUTH_CONFIRM_URL": ""}, "OAUTH_CONFIRM_URL is not set"),
        ({"OAUTH_CONFIRM_URL": "http://app.example.com/c"}, "OAUTH_CONFIRM_URL='http://app"),
    ],
)
def test_an_oauth_server_needs_https_public_and_confirm_urls(
    change: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named) as info:
        enforce_production_settings({**GOOD, **OAUTH, **change})
    assert "'github'" in str(info.value) or "URL=" in str(info.value)


def test_without_an_oauth_server_its_settings_are_not_needed() -> None:
    enforce_production_settings({**GOOD, "ONBEHALF_PUBLIC_URL": "", "OAUTH_CONFIRM_URL": ""})


def test_a_servers_file_on_loopback_is_refused_by_its_setting(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text(servers("http://127.0.0.2:9000/mcp"))
    with pytest.raises(SettingsError, match="MCP_SERVERS_FILE: server 'tickets' is on loopback"):
        enforce_production_settings({**GOOD, "MCP_SERVERS": "", "MCP_SERVERS_FILE": str(path)})


def test_the_repositorys_own_dev_setup_is_refused_in_production() -> None:
    dev = {k: v for k, v in GOOD.items() if k not in ("AGENT_MODEL", "MCP_SERVERS")}
    with pytest.raises(SettingsError) as refused:
        enforce_production_settings(dev)
    assert "AGENT_MODEL" in str(refused.value)
    assert "MCP_SERVERS" in str(refused.value)


def test_outside_production_nothing_is_enforced() -> None:
    enforce_production_settings({"ONBEHALF_ENV": "development"})
    enforce_production_settings({})


def test_the_server_edge_refuses_to_load_in_production_with_dev_settings() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TOKEN_SEALING_KEY"}
    env.update(ONBEHALF_ENV="production", ONBEHALF_NO_DOTENV="1")
    code = (
        "import importlib.util,sys;"
        f"s=importlib.util.spec_from_file_location('auth', {str(root / 'src/auth.py')!r});"
        "m=importlib.util.module_from_spec(s);s.loader.exec_module(m)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "refusing to start with ONBEHALF_ENV=production" in result.stderr
    assert "TOKEN_SEALING_KEY" in result.stderr
