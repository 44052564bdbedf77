"""Every kit setting is read through a settings model (onbehalf/settings.py), live and checked."""

from __future__ import annotations

import pytest

from onbehalf.mcp.pool import PoolSettings
from onbehalf.mcp.prewarm import prewarm_enabled
from onbehalf.mcp.results import max_result_chars
from onbehalf.servers import load_servers_config
from onbehalf.settings import KitSettings, SettingsError, current


def test_a_changed_variable_takes_effect_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_TOOL_RESULT_MAX_CHARS", raising=False)
    assert max_result_chars() == 50_000
    monkeypatch.setenv("MCP_TOOL_RESULT_MAX_CHARS", "1000")
    assert max_result_chars() == 1000
    monkeypatch.setenv("MCP_SESSION_IDLE_SECONDS", "0")
    assert PoolSettings.from_env().idle_seconds == 0
    monkeypatch.setenv("ONBEHALF_PREWARM", "false")
    assert prewarm_enabled() is False
    monkeypatch.setenv("ONBEHALF_PREWARM", "")  # blank: the default
    assert prewarm_enabled() is True


def test_an_unchanged_environment_reuses_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_TOOLS_CACHE_SECONDS", "5")
    assert current(KitSettings) is current(KitSettings)


@pytest.mark.parametrize(("name", "value"), [
    ("MCP_TOOL_RESULT_MAX_CHARS", "lots"),
    ("MCP_SESSION_IDLE_SECONDS", "-1"),
    ("MCP_SESSION_POOL_SIZE", "many"),
    ("ONBEHALF_PREWARM", "perhaps"),
])
def test_a_malformed_value_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        current(KitSettings)


def test_the_servers_file_setting_is_read_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SERVERS", '{"servers": {"a": {"url": "http://127.0.0.1:1/mcp"}}}')
    assert list(load_servers_config().servers) == ["a"]
    monkeypatch.setenv("MCP_SERVERS", '{"servers": {"b": {"url": "http://127.0.0.1:1/mcp"}}}')
    assert list(load_servers_config().servers) == ["b"]
