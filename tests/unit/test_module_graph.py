"""The import graph of `src/`: layers that only point down, and no cycle anywhere.

Every import counts, wherever it stands: at module level, under
`if TYPE_CHECKING:`, or inside a function (a deferred import that dodges a
cycle is still the cycle). So do the `module:function` strings the CLI
imports its commands from, and importing `a.b.c` counts as importing the
packages `a` and `a.b` too (Python runs their `__init__` first), except those
the importer itself lives in.

The layers are drawn in docs/architecture.md; a module may import its own
layer or the ones below, never one above, and `onbehalf` never imports this
repository's graphs (`src/agents`) or its edge file (`src/auth.py`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("onbehalf", "onbehalf.settings", "onbehalf.errors", "onbehalf.sealing",
                    "onbehalf.jwt_auth", "onbehalf.cli_errors", "onbehalf.dev_tokens",
                    "onbehalf.dotenv", "onbehalf.local_redis")),
    ("configuration and storage", ("onbehalf.servers", "onbehalf.redis_store",
                                   "onbehalf.user_secrets", "onbehalf.models",
                                   "onbehalf.offline_model")),
    ("connected accounts", ("onbehalf.oauth",)),
    ("per-user MCP kit", ("onbehalf.mcp",)),
    ("server edge", ("onbehalf.edge", "onbehalf.production", "onbehalf.http_app",
                     "onbehalf.console")),
    ("applications", ("onbehalf.worker", "onbehalf.demo", "onbehalf.cli", "onbehalf.client_cli",
                      "onbehalf.connections_cli", "onbehalf.secrets_cli", "onbehalf.devserver",
                      "onbehalf.processes", "onbehalf.serve",
                      "onbehalf.__main__")),
    ("this repository's project", ("agents", "auth")),
]
_COMMAND = re.compile(r"^([a-z_][\w.]*):\w+$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Every name a module imports, anywhere in it, and every `module:function` string."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _COMMAND.match(node.value)
            if match:
                found.add(match.group(1))
    return found


def _with_parents(imported: str, importer: str) -> set[str]:
    """`a.b.c` and the packages Python initialises for it, but the importer's own."""
    parts = imported.split(".")
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - (own - {imported})


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for imported in _imports(tree, name, path.name == "__init__.py"):
            edges |= _with_parents(imported, name)
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def layer_of(module: str) -> int:
    """The index of the layer a module belongs to (its longest matching prefix)."""
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_detector_finds_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_detector_counts_deferred_type_only_and_command_imports() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from onbehalf.mcp.run_scope import RunScope\n"
        "def later():\n    from onbehalf.oauth import accounts\n"
        "_run = _command('onbehalf.worker.cli:cmd_worker_run')\n"
    )
    found = _imports(tree, "onbehalf.mcp.interceptors", is_package=False)
    assert {"onbehalf.mcp.run_scope", "onbehalf.oauth.accounts", "onbehalf.worker.cli"} <= found


def test_importing_a_module_initialises_its_packages_but_not_the_importers_own() -> None:
    assert _with_parents("onbehalf.mcp.tokens", "onbehalf.edge") == {
        "onbehalf.mcp", "onbehalf.mcp.tokens"}
    assert _with_parents("onbehalf.mcp.tokens", "agents.assistant.graph") == {
        "onbehalf", "onbehalf.mcp", "onbehalf.mcp.tokens"}
    assert _with_parents("onbehalf.mcp.tokens", "onbehalf.mcp.middleware") == {
        "onbehalf.mcp.tokens"}


def test_the_detector_finds_an_upward_import() -> None:
    assert upward_imports({"onbehalf.settings": {"onbehalf.mcp.middleware"}}) == [
        "onbehalf.settings (foundation) imports onbehalf.mcp.middleware (per-user MCP kit)"]


def test_every_module_has_a_layer() -> None:
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_src_has_no_import_cycle() -> None:
    graph = import_graph()
    assert graph.get("onbehalf.mcp.middleware")
    assert cycles(graph) == []


def test_no_import_points_up_a_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_onbehalf_never_imports_this_repositorys_graphs_or_edge_file() -> None:
    graph = import_graph()
    assert sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() if module.startswith("onbehalf")
        for target in targets if target.split(".")[0] in {"agents", "auth"}
    ) == []


def test_the_middleware_builds_the_users_multiserver_client() -> None:
    """The class users of langchain-mcp-adapters look for is where the design says."""
    client = (SRC / "onbehalf" / "mcp" / "client.py").read_text()
    middleware = (SRC / "onbehalf" / "mcp" / "middleware.py").read_text()
    assert "class UserMCPClient(MultiServerMCPClient)" in client
    assert "UserMCPClient(user.identity" in middleware
