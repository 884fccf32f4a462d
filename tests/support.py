"""Helpers shared by the test modules (waiting on conditions, finding worker processes, reading
audit records, a verifier for the demo issuer, a backend that always fails). Test modules import
from here, never from each other."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DemoKeys
from agentgov.engine.backends.base import Explanation
from agentgov.engine.hooks.audit.verify import log_files, read_records
from agentgov.engine.hooks.identity import IdentityVerifier, Issuer
from agentgov.engine.model import Decision
from tests.conftest import REPO

POLL_S = 0.05


def wait_for(condition: Callable[[], object], timeout_s: float = 15.0) -> bool:
    """Poll `condition` until it is true or `timeout_s` passes; the answer says which."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL_S)
    return bool(condition())


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """`wait_for` inside an event loop (the loop keeps running while it waits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def workers_of(parent: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's spawned children)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    out = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(pid))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def records(directory: Path) -> list[dict[str, Any]]:
    """Every audit record under `directory`, in chain order per file."""
    return [json.loads(raw) for files in log_files([directory]).values() for _, _, raw in read_records(files)]


def wheel_environment(base: Path) -> Path:
    """The package as users get it: a wheel built with `pip wheel .`, installed into a fresh venv under
    `base` (its dependencies taken from this environment's site-packages: no network, no second
    download). Returns the venv's python."""
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("agentgov-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # A plain path entry, so this environment's editable agentgov is not visible there.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    return python


def policy_folder(base: Path, name: str, engine: str, rego: str, cedar: str) -> Path:
    """A folder holding one policy of the engine's language (a user's own, for stack tests)."""
    folder = base / f"{name}-{engine}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("policy.rego" if engine == "rego" else "policy.cedar")).write_text(rego if engine == "rego" else cedar)
    return folder


def verifier(tmp_path: Path, keys: DemoKeys, clock: Callable[[], float] | None = None) -> IdentityVerifier:
    """A verifier for the demo issuer, its JWKS written to `tmp_path`."""
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    issuer = Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"))
    return IdentityVerifier([issuer], clock=clock) if clock is not None else IdentityVerifier([issuer])


class ExplodingBackend:
    """A decision backend that raises on every call: the fail-closed paths."""

    name = "boom"

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        raise RuntimeError("unexpected")

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        raise RuntimeError("unexpected")

    async def close(self) -> None:
        return None
