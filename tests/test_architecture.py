"""The data flows one way (docs/architecture.md §1-2): hooks, backends, protocol parsers, policy loading and the
Governor never import the servers (adapters) or the CLI, and the protocol parsers stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

INNER = ["engine/hooks", "engine/backends", "engine/protocols", "engine/policy", "engine/bundles", "engine/testing",
         "engine/governor.py", "engine/model.py", "engine/metrics.py", "engine/policy_input.py"]
OUTER = ("agentgov.engine.server", "agentgov.cli")
# Parsers take bytes and return fields: no I/O, no clocks, no engines.
IMPURE_FOR_PROTOCOLS = ("socket", "urllib.request", "http.client", "aiohttp", "grpc", "regorus", "cedarpy",
                        "time", "datetime", "os", "subprocess")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _files(entry: str) -> list[Path]:
    path = REPO / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("entry", INNER)
def test_inner_layers_do_not_import_adapters_or_the_cli(entry: str) -> None:
    for file in _files(entry):
        bad = [name for name in _imports(file) if name.startswith(OUTER)]
        assert not bad, f"{file.relative_to(REPO)} imports {bad}"


def test_protocol_parsers_are_pure() -> None:
    for file in _files("engine/protocols"):
        bad = [name for name in _imports(file)
               if any(name == m or name.startswith(f"{m}.") for m in IMPURE_FOR_PROTOCOLS)]
        assert not bad, f"{file.relative_to(REPO)} imports {bad}"


def test_the_repository_has_no_symbolic_links() -> None:
    """Links break on Windows checkouts and hide files from coverage; the package maps folders instead."""
    import subprocess

    listing = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000")]
    assert links == []


def test_every_python_package_is_in_the_wheel() -> None:
    """pyproject lists the packages (package-dir maps the folders): a new folder must be added there."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"engine": "agentgov.engine", "cli": "agentgov.cli"}
    found = {"agentgov", "agentgov.library"}
    for folder, package in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([package, *parts]))
    assert found == listed
