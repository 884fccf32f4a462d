"""The container image, as far as this machine can go without a container runtime: the wheel
installed the way deploy/Dockerfile installs it, into a fresh environment nobody but root can write,
and `agentgov serve` run as the image's unprivileged user (uid 10001) with only the documented
state folder writable: it starts, answers checks, writes its audit log and persisted state there,
and nowhere else."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentgov.cli.stack import free_ports
from tests.conftest import POLICIES, REPO
from tests.http_helpers import request
from tests.support import wait_for, wheel_environment

DOCKERFILE = REPO / "deploy" / "Dockerfile"
UID = 10001


def test_the_dockerfile_builds_the_wheel_and_runs_as_non_root_without_a_shell() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    # multi-stage: the console's npm libraries, the wheel, the image (one pinnable Python base)
    assert stages == ["${NODE_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "npm ci" in text
    assert "USER 10001:10001" in text
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["python"', text, re.MULTILINE)  # exec form
    assert re.search(r'^ENTRYPOINT \["agentgov"\]', text, re.MULTILINE)
    assert "pip install --no-index --find-links /wheels agentgov" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A root-owned tree, readable by everyone, as the image's filesystem: the wheel in a venv."""
    root = Path(tempfile.mkdtemp(prefix="agentgov-image-"))
    root.chmod(0o755)
    try:
        wheel_environment(root)  # the wheel into root/venv, as the Dockerfile installs it
        for path in [root, *root.rglob("*")]:  # readable by the unprivileged user, writable by root only
            path.chmod(0o755 if path.is_dir() else 0o644 if not os.access(path, os.X_OK) else 0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_ships_the_console_pages_and_browser_libraries(image_root: Path) -> None:
    """Users need no build step: templates, styles and the npm libraries are in the wheel."""
    shipped = {p.name for p in image_root.rglob("agentgov/console/**/*") if p.is_file()}
    assert {"base.html", "approvals.html", "console.css", "console.js", "htmx.min.js", "chart.umd.js",
            "htmx.LICENSE", "chart.js.LICENSE.md"} <= shipped


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.reliability
def test_serve_runs_unprivileged_writing_only_the_state_folder(image_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to the image's user needs root (CI runs as root)")
    etc, state = image_root / "etc", Path(tempfile.mkdtemp(prefix="agentgov-state-"))
    etc.mkdir(exist_ok=True)
    os.chown(state, UID, UID)
    state.chmod(0o750)
    port, http_port = free_ports(2)  # distinct: two separate picks may return the same port
    config = {"policy": {"paths": [str(image_root / "venv-policies")]}, "identity": {"required": False},
              "server": {"host": "127.0.0.1", "port": port, "http_port": http_port},
              "audit": {"dir": str(state / "audit")},
              "budgets": {"store": f"sqlite:///{state / 'budgets.sqlite3'}",
                          "limits": [{"name": "calls", "key": "subject", "window": "1h", "requests": 10}]}}
    shutil.copytree(POLICIES, image_root / "venv-policies", dirs_exist_ok=True)
    for path in [image_root / "venv-policies", *(image_root / "venv-policies").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (etc / "agentgov.yaml").write_text(yaml.safe_dump(config))
    (etc / "agentgov.yaml").chmod(0o644)
    before = _snapshot(image_root)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(state), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
           "TMPDIR": "/tmp"}
    proc = subprocess.Popen(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
                             str(image_root / "venv" / "bin" / "python"), "-m", "agentgov.cli.main", "serve",
                             "--config", str(etc / "agentgov.yaml")],
                            cwd=state, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", http_port)) == 0

        assert wait_for(lambda: up() or proc.poll() is not None, 60) and proc.poll() is None, \
            proc.stdout.read().decode() if proc.stdout else ""  # noqa: PT018
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as health:
            assert health.status == 200
        status, _, body = request(f"http://127.0.0.1:{http_port}/ext_authz/mcp", "POST",
                                  {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"host": "demo"})
        if status != 200:
            assert json.loads(body)["decision_id"]
        assert status in (200, 401, 403)  # decided: an anonymous caller is the library's 401
        assert wait_for(lambda: any((state / "audit").glob("*.jsonl")), 10)  # the audit log, in the state folder
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)
    assert proc.returncode == 0
    assert _snapshot(image_root) == before  # nothing written in the image's filesystem
