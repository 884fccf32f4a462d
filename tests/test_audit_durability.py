"""`audit.durability: write`: answers wait for the write, not for the fsync, which a thread of its
own issues behind them. Killed, the worker loses nothing it acknowledged; a failed fsync stops
decisions; checkpoints vouch only for what was fsynced."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentgov.engine.hooks.audit.chain import AuditError, ChainWriter
from agentgov.engine.hooks.audit.record import GENESIS
from agentgov.engine.hooks.audit.verify import verify
from tests.test_audit_log import body, lines

REPO = Path(__file__).resolve().parent.parent


class HeldFsync:
    """os.fsync that blocks (for the log's files only) until released: a disk that stalls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.release = threading.Event()
        self.calls = 0
        self._real = os.fsync
        self._directory = str(directory)
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(self._directory) and os.path.isfile(f"/proc/self/fd/{fd}"):
            self.calls += 1
            if not self.release.wait(10):
                raise OSError(5, "held fsync never released")
        self._real(fd)


def test_answers_do_not_wait_for_a_stalled_fsync_but_checkpoints_do(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()

    async def go() -> None:
        writer = ChainWriter(tmp_path, "node-w0", signing_key=key, checkpoint_every_s=3600, durability="write")
        writer.open()
        held = HeldFsync(monkeypatch, tmp_path)
        records = [await asyncio.wait_for(writer.append(body(i)), 5) for i in range(20)]  # none waits for the disk
        assert [r["seq"] for r in records] == list(range(1, 21))
        assert len(lines(tmp_path)[0][1]) == 20  # written: a killed worker would not lose them
        for _ in range(500):
            if held.calls:
                break
            await asyncio.sleep(0.01)
        assert held.calls == 1  # the syncing thread is stuck in its first fsync
        assert writer._durable_head() == (0, GENESIS)  # nothing is vouched for until it is fsynced
        held.release.set()
        await writer.close()  # fsyncs the rest, then signs the head

    asyncio.run(go())
    checkpoints = (tmp_path / "node-w0.checkpoints.jsonl").read_bytes().splitlines()
    assert json.loads(checkpoints[-1])["seq"] == 20
    assert verify([tmp_path], key.public_key()).ok


def test_a_failed_fsync_behind_the_writes_stops_decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fsync

    def broken(fd: int) -> None:
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise OSError(5, "Input/output error")
        real(fd)

    async def go() -> None:
        writer = ChainWriter(tmp_path, "node-w0", durability="write")
        writer.open()
        monkeypatch.setattr(os, "fsync", broken)
        await writer.append(body(0))  # written; its fsync, behind, fails
        for _ in range(200):
            if writer._sync_failed:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(AuditError, match="audit fsync failed: Input/output error"):
            await writer.append(body(1))
        monkeypatch.undo()
        await writer.close()

    asyncio.run(go())


KILLED_WRITER = """
import asyncio, os, sys
from pathlib import Path
from agentgov.engine.hooks.audit.chain import ChainWriter

async def main():
    writer = ChainWriter(Path(sys.argv[1]), "node-w0", durability="write")
    writer.open()
    acknowledged = []
    for i in range(int(sys.argv[2])):
        await writer.append({"v": 1, "decision_id": f"k{i}", "allow": True})
        acknowledged.append(f"k{i}")
    Path(sys.argv[3]).write_text("\\n".join(acknowledged))
    os.kill(os.getpid(), 9)  # killed: no close, no fsync of the tail

asyncio.run(main())
"""


@pytest.mark.reliability
def test_a_killed_worker_loses_no_acknowledged_record(tmp_path: Path) -> None:
    logs, acked = tmp_path / "audit", tmp_path / "acked.txt"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(logs), "300", str(acked)], check=False, cwd=REPO)
    assert killed.returncode == -9
    written = [json.loads(line)["decision_id"] for _, content in lines(logs) for line in content]
    assert written == acked.read_text().split("\n")
    assert verify([logs]).ok


@pytest.mark.parametrize("value", ["sometimes", "", 1])
def test_an_unknown_durability_is_a_clear_config_error(tmp_path: Path, value: Any) -> None:
    from agentgov.engine.config import ConfigError, build_governor, load_config

    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(REPO / "policies")]}, "identity": {"required": False},
                                "audit": {"dir": "a", "durability": value}}))
    with pytest.raises(ConfigError) as err:
        build_governor(load_config(path))
    assert "audit.durability" in str(err.value)


def test_the_chain_writer_refuses_an_unknown_durability(tmp_path: Path) -> None:
    async def go() -> None:
        with pytest.raises(AuditError, match="durability must be one of fsync, write"):
            ChainWriter(tmp_path, "node-w0", durability="sometimes").open()

    asyncio.run(go())
