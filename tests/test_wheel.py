"""The package as users get it: a wheel built with `pip wheel .`, installed into a fresh venv, runs
`agentgov demo` and `agentgov test` on the shipped library, with no checkout around it."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support import wheel_environment


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, an empty working folder)."""
    base = tmp_path_factory.mktemp("wheel")
    python = wheel_environment(base)
    work = base / "empty"
    work.mkdir()
    return python, work


def run(python: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)}
    return subprocess.run([str(python), "-m", "agentgov.cli.main", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_wheel_ships_the_library_and_no_links(installed: tuple[Path, Path]) -> None:
    python, work = installed
    where = subprocess.run([str(python), "-c", "import agentgov.engine, agentgov.library as l; "
                            "print(agentgov.engine.__file__); print(l.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert all("/site-packages/agentgov/" in w for w in where), where
    wheel = next((work.parent / "wheels").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("agentgov/library/rego/agentgov.rego", "agentgov/library/cedar/agentgov.cedar",
                   "agentgov/library/agentgov/catalog/data.yaml", "agentgov/library/examples/requests.yaml",
                   "agentgov/engine/schema/input.schema.json", "agentgov/py.typed",
                   "agentgov/engine/proto/agentgov/v1/decision.proto"):
        assert needed in names, needed
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_agentgov_demo_runs_from_the_wheel(installed: tuple[Path, Path]) -> None:
    result = run(*installed, "demo")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "engines agree on every request" in result.stdout


def test_agentgov_test_runs_the_shipped_library_from_the_wheel(installed: tuple[Path, Path]) -> None:
    result = run(*installed, "test", "--coverage")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " 0 failed" in result.stdout
    check = run(*installed, "check")
    assert check.returncode == 0, check.stderr
