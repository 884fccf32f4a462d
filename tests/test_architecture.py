"""The data flows one way (docs/architecture.md): transport → adapter → request → stages → decision →
adapter → response. Checked here on the import graph of src/agentgov, read with `ast`:

- each layer imports only the layers beneath it (hooks and backends never import the pipeline,
  the servers or the CLI; the protocol parsers stay pure);
- there is no import cycle between modules, counting imports inside functions too (a lazy import
  must not hide a circle), and not counting `if TYPE_CHECKING:` blocks (never run);
- no door checks for a concrete class of another layer (`isinstance(x, Governor)`).
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "agentgov"

# Layers, lowest first. A module may import its own layer and any layer listed before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("agentgov", "agentgov.engine", "agentgov.engine.errors", "agentgov.engine.keys",
              "agentgov.engine.model", "agentgov.engine.metrics", "agentgov.engine.protocols",
              "agentgov.engine.proto", "agentgov.engine.policy_input", "agentgov.engine.yamldoc",
              "agentgov.engine.gc_pause", "agentgov.engine.worker_thread",
              "agentgov.engine.telemetry")),
    ("engines", ("agentgov.engine.backends", "agentgov.engine.policy", "agentgov.engine.bundles")),
    ("hooks", ("agentgov.engine.hooks",)),
    ("approvals", ("agentgov.engine.approvals",)),
    ("pipeline", ("agentgov.engine.pipeline",)),
    ("assembly", ("agentgov.engine.config", "agentgov.engine.testing")),
    ("adapters", ("agentgov.engine.server", "agentgov.console")),
    ("cli", ("agentgov.cli",)),
]
# Parsers take bytes and return fields: no I/O, no clocks, no engines.
IMPURE_FOR_PROTOCOLS = ("socket", "urllib.request", "http.client", "aiohttp", "grpc", "regorus", "cedarpy",
                        "time", "datetime", "os", "subprocess")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "_pb2" not in p.name}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_run_time(node: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: `if TYPE_CHECKING:` bodies are skipped."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk_run_time(other)
            continue
        yield child
        yield from _walk_run_time(child)


def _imports(module: str, path: Path, known: frozenset[str] = frozenset()) -> list[str]:
    """What `module` imports. `from pkg import sub` names `pkg.sub` alone when `sub` is a module in
    `known` (Python imports the package first, but the package did not ask for it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in _walk_run_time(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            if len(submodules) < len(node.names):
                names.append(base)
            names.extend(submodules)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {n for n in _imports(name, path, frozenset(modules)) if n in modules and n != name}
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def test_every_module_has_a_layer() -> None:
    assert [m for m in _modules() if _layer(m) < 0] == []


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            if _layer(target) > _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})")
    assert wrong == []


@pytest.mark.parametrize("inner", ["agentgov.engine.hooks", "agentgov.engine.backends"])
def test_hooks_and_backends_never_import_adapters_or_the_cli(inner: str) -> None:
    outer = ("agentgov.engine.server", "agentgov.cli", "agentgov.engine.pipeline", "agentgov.engine.config")
    bad = [f"{m} → {t}" for m, ts in _graph().items() if m.startswith(inner) for t in ts if t.startswith(outer)]
    assert bad == []


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the module graph: every component is one module."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The checker itself: a lazy import inside a function still counts."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import agentgov.b\n")
    b.write_text("def f():\n    import agentgov.a\n")
    assert _imports("agentgov.a", a) == ["agentgov.b"]
    assert _imports("agentgov.b", b) == ["agentgov.a"]
    c = tmp_path / "c.py"
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import agentgov.a\n")
    assert _imports("agentgov.c", c) == ["typing"]


def test_protocol_parsers_are_pure() -> None:
    for module, path in _modules().items():
        if not module.startswith("agentgov.engine.protocols"):
            continue
        bad = [name for name in _imports(module, path)
               if any(name == m or name.startswith(f"{m}.") for m in IMPURE_FOR_PROTOCOLS)]
        assert not bad, f"{module} imports {bad}"


def test_no_isinstance_checks_on_the_runner() -> None:
    """Doors ask a `Decider` for what they need (`decider.local`), never which class it is."""
    found = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" \
                    and len(node.args) == 2 and "Governor" in ast.unparse(node.args[1]):
                found.append(f"{module}:{node.lineno}")
    assert found == []


def test_the_repository_has_no_symbolic_links() -> None:
    """Links break on Windows checkouts and hide files from coverage."""
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000")]
    assert links == []


def test_every_python_package_is_in_the_wheel() -> None:
    """pyproject lists the packages: a new folder under src/agentgov must be added there."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(SRC).parts) for init in PACKAGE.rglob("__init__.py")}
    assert found | {"agentgov.library"} == listed
