"""`agentgov up --config`: your own configuration through the real stack (policies, budgets, audit),
example calls for the roles your policy's data names, and `agentgov token` for any role."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import Result

from agentgov.cli.running import read_running
from tests.conftest import POLICIES
from tests.http_helpers import bearer, request
from tests.support import records, wait_for

pytestmark = pytest.mark.envoy

SEARCH = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search.web", "arguments": {"q": "x"}}}


def _project(tmp_path: Path, run_cli: Callable[..., Result]) -> Path:
    """A user's project: a policy folder from `agentgov init`, budgets, an audit folder (relative paths)."""
    assert run_cli("init", str(tmp_path / "policies")).exit_code == 0
    config = tmp_path / "agentgov.yaml"
    config.write_text(yaml.safe_dump({
        "policy": {"paths": ["policies"]},
        "identity": {"issuers": [{"issuer": "https://login.example.com", "audiences": ["agents"],
                                  "jwks_url": "https://login.example.com/jwks.json"}]},
        "budgets": {"store": "sqlite:///state/budgets.sqlite3",
                    "limits": [{"name": "per_subject", "key": "subject", "window": "1h", "requests": 2}]},
        "audit": {"dir": "audit"},
        "approvals": {"store": "sqlite:///state/approvals.sqlite3"}}))
    return config


def test_your_own_configuration_runs_behind_the_local_envoy(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    config = _project(tmp_path, run_cli)
    proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "up", "--config", str(config), "--check",
                           "--keep"], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    workdir = Path(next(line for line in out.splitlines() if line.startswith("logs and config: ")).split(": ", 1)[1])
    ran = yaml.safe_load((workdir / "agentgov.yaml").read_text())
    shutil.rmtree(workdir)
    assert ran["approvals"]["store"] == f"sqlite:///{tmp_path / 'state' / 'approvals.sqlite3'}"  # yours, located
    assert "console" in ran  # and the console beside it
    assert "# the MCP handshake" in out
    assert "# no token: 401" in out
    answers = [line for line in out.splitlines() if line.startswith("→ ")]
    assert answers[0].startswith("→ 200")  # initialize, through the user's own policy
    assert answers[1].startswith("→ 401")
    decided = records(tmp_path / "audit")  # the audit folder is the configuration's, relative to it
    assert {r["status"] for r in decided} >= {200, 401}
    assert (tmp_path / "state" / "budgets.sqlite3").is_file()


def test_the_roles_your_catalog_names_get_an_example_each(tmp_path: Path) -> None:
    config = tmp_path / "agentgov.yaml"
    config.write_text(yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False}}))
    proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "up", "--config", str(config), "--check"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for role in ("analyst", "support", "developer", "hr"):
        assert f"# role {role} → " in proc.stdout
    titled = [line for line in proc.stdout.splitlines() if line.startswith(("# role", "→ "))]
    pairs = list(zip(titled[::2], titled[1::2], strict=False))
    assert all(answer.startswith("→ 200") for title, answer in pairs if title.startswith("# role")), pairs


def test_agentgov_token_mints_callers_for_a_running_stack(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    config = _project(tmp_path, run_cli)
    result = run_cli("token", "--sub", "ivy", "--role", "intern")
    if read_running() is None:
        assert result.exit_code == 1
        assert "no `agentgov up` is running" in result.output
    up = subprocess.Popen([sys.executable, "-m", "agentgov.cli.main", "up", "--config", str(config)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        assert wait_for(lambda: read_running() is not None, 90)
        running = read_running()
        assert running is not None
        minted = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "token", "--sub", "ivy", "--role", "intern"],
                                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        status, _, body = request(running["url"] + "/mcp", "POST", SEARCH, bearer(minted))
        assert status == 200, body
        status, _, body = request(running["url"] + "/mcp", "POST", SEARCH, bearer(minted))
        assert status == 200
        status, _, body = request(running["url"] + "/mcp", "POST", SEARCH, bearer(minted))
        assert status == 429  # the configuration's budget: two calls per subject and hour
        assert json.loads(body)["reasons"] == ["budget_exhausted"]
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=30)
    assert read_running() is None
