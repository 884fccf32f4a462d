"""Shared fixtures: the repository's policy library and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agentgov.cli.main import cli

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped library that a test may edit."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def revoke_analyst_crm(policies: Path) -> Path:
    """Edit a copy of the library: analysts lose crm.query (the one-grant change diff, reload and
    shadow tests are about)."""
    catalog = policies / "agentgov" / "catalog" / "data.yaml"
    text = catalog.read_text()
    granted = "  crm.query:\n    roles: [analyst, support, admin]\n"
    assert granted in text
    catalog.write_text(text.replace(granted, "  crm.query:\n    roles: [support, admin]\n"))
    return policies


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return run
