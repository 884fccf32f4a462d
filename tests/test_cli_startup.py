"""The CLI starts in a blink: `agentgov --help` imports no server, engine or store library, and the
commands a pre-commit hook or CI gate runs import only what they use. Import sets, not timings
(docs/benchmarks.md has the timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentgov.cli.main import COMMANDS, cli
from tests.conftest import POLICIES

# Loaded by servers, stores, sinks and bundle transport, never by the commands below.
SERVER_SIDE = ("aiohttp", "grpc", "oras", "redis", "opa_client", "uvloop", "httptools", "envoy")
ENGINES = ("regorus", "cedarpy", "jsonschema", "yaml", "cryptography", "jwt", "prometheus_client")


def _modules_after(args: list[str]) -> set[str]:
    probe = ("import sys, json\nfrom agentgov.cli.main import cli\n"
             f"try:\n    cli.main({args!r}, prog_name='agentgov', standalone_mode=False)\n"
             "except SystemExit:\n    pass\n"
             "print('MODULES' + json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    return set(json.loads(out[out.index("MODULES") + len("MODULES"):]))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_imports_no_engine_server_or_store() -> None:
    loaded = _top(_modules_after(["--help"]))
    assert loaded.isdisjoint(SERVER_SIDE + ENGINES), sorted(loaded & set(SERVER_SIDE + ENGINES))


@pytest.mark.parametrize("args", [["check", str(POLICIES)], ["test", str(POLICIES)], ["fmt", "--check", str(POLICIES)],
                                  ["eval", str(POLICIES), "-i", str(POLICIES / "examples" / "request.json")]])
def test_policy_commands_import_no_server_or_store(args: list[str]) -> None:
    loaded = _top(_modules_after(args))
    assert loaded.isdisjoint(SERVER_SIDE), sorted(loaded & set(SERVER_SIDE))


def test_the_command_table_says_what_each_command_says() -> None:
    for name, (_, _, summary) in COMMANDS.items():
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None
        assert command.get_short_help_str(limit=10_000) == summary, name
    assert cli.get_command(None, "no-such-command") is None  # type: ignore[arg-type]


def test_a_rego_worker_loads_no_library_its_configuration_does_not_use(tmp_path: object) -> None:
    """Memory per worker: a Rego worker with local policies, budgets and audit never loads the OCI
    client (oras, requests), the remote-OPA client, cedarpy, or aiohttp (only the Data API, audit
    sinks and remote bundles need it) (docs/benchmarks.md, worker memory)."""
    probe = (
        "import asyncio, json, sys, pathlib, yaml\n"
        "import agentgov.cli.serve, agentgov.engine.server.app\n"
        "from agentgov.engine.config.resolver import load_config\n"
        "from agentgov.engine.config.build import build_governor\n"
        f"path = pathlib.Path({str(tmp_path)!r}) / 'agentgov.yaml'\n"
        f"path.write_text(yaml.safe_dump({{'policy': {{'engine': 'rego', 'paths': [{str(POLICIES)!r}]}},"
        " 'identity': {'required': False}, 'budgets': {'store': 'sqlite', 'limits': [{'name': 'b', 'key': 'subject',"
        " 'window': 'day', 'requests': 10}]}, 'audit': {'dir': 'audit'}}))\n"
        "async def main():\n"
        "    governor = build_governor(load_config(path))\n"
        "    await governor.start()\n"
        "    await governor.close()\n"
        "asyncio.run(main())\n"
        "print('MODULES' + json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    loaded = _top(set(json.loads(out[out.index("MODULES") + len("MODULES"):])))
    assert "regorus" in loaded  # the probe did build a Rego worker's governor
    unused = {"oras", "requests", "opa_client", "cedarpy", "aiohttp"}
    assert loaded.isdisjoint(unused), sorted(loaded & unused)
