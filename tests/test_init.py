"""`agentgov init`: a policy folder of your own on top of the library, whose few lines keep the MCP
session working, through the CLI and through the real Envoy, on Rego and Cedar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentgov.cli.stack import LocalStack
from tests.http_helpers import bearer, send

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def call(tool: str) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool, "arguments": {"q": "x"}}}


@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_the_scaffold_checks_and_its_cases_pass(tmp_path: Path, run_cli: Callable[..., Result], engine: str) -> None:
    folder = tmp_path / "mine"
    result = run_cli("init", str(folder), "--engine", engine)
    assert result.exit_code == 0, result.output
    assert (folder / "README.md").is_file()
    assert run_cli("check", str(folder)).exit_code == 0
    tested = run_cli("test", str(folder))
    assert tested.exit_code == 0, tested.output
    assert "6 passed, 0 failed" in tested.output


def test_it_never_overwrites_without_being_asked(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    folder = tmp_path / "mine"
    assert run_cli("init", str(folder)).exit_code == 0
    (folder / "policy.rego").write_text((folder / "policy.rego").read_text() + "\n# my edit\n")
    refused = run_cli("init", str(folder))
    assert refused.exit_code == 1
    assert "already exist" in refused.output
    assert "# my edit" in (folder / "policy.rego").read_text()
    (folder / "lib" / "agentgov_lib.rego").write_text("package agentgov.lib\n")  # an old copy
    assert run_cli("init", str(folder), "--lib-only").exit_code == 0
    assert "answer(allowed, refusals)" in (folder / "lib" / "agentgov_lib.rego").read_text()
    assert "# my edit" in (folder / "policy.rego").read_text()  # yours is left alone


@pytest.mark.envoy
@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_a_few_lines_of_your_own_keep_the_session_working_through_envoy(tmp_path: Path,
                                                                        run_cli: Callable[..., Result],
                                                                        engine: str) -> None:
    folder = tmp_path / "mine"
    assert run_cli("init", str(folder), "--engine", engine).exit_code == 0
    with LocalStack(policies=folder, engine=engine) as stack:
        intern = bearer(stack.keys.token("ivy", ["intern"], "acme"))
        assert send(stack, "/mcp", INITIALIZE, intern)[0] == 200
        assert send(stack, "/mcp", LIST, intern)[0] == 200
        assert send(stack, "/mcp", call("search.web"), intern)[0] == 200
        status, _, body = send(stack, "/mcp", call("crm.export"), intern)
        assert status == 403
        assert body["decision_id"]
        assert send(stack, "/mcp", call("search.web"), {})[0] == 401
