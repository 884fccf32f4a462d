"""The audit log itself: group commit, resuming after a crash, rotation, checkpoints, and
`agentgov audit verify` naming the first bad record for every kind of tampering."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentgov.engine.hooks.audit.chain import AuditError, ChainWriter, chain_files
from agentgov.engine.hooks.audit.verify import verify

Run = Callable[..., Result]


def body(i: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "decision_id": f"d{i:04d}", "time": f"2026-11-30T12:00:{i % 60:02d}+00:00", "allow": i % 2 == 0,
            "status": 200 if i % 2 == 0 else 403, "reasons": ["ok" if i % 2 == 0 else "default_deny"],
            "subject": {"id": f"user{i % 3}", "tenant": "acme", "roles": []}, "entry_point": "ext_authz",
            "actions": [{"kind": "tool.call", "name": "crm.query", "resource_type": "tool", "resource_id": "crm.query"}],
            **extra}


def write(directory: Path, n: int, *, key: Ed25519PrivateKey | None = None, max_file_bytes: int = 1 << 20,
          chain: str = "node-w0", one_by_one: bool = False) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        writer = ChainWriter(directory, chain, max_file_bytes=max_file_bytes, signing_key=key, checkpoint_every_s=60)
        writer.open()
        if one_by_one:
            records = [await writer.append(body(i)) for i in range(n)]
        else:
            records = list(await asyncio.gather(*(writer.append(body(i)) for i in range(n))))
        await writer.close()
        return records

    return asyncio.run(go())


def lines(directory: Path, chain: str = "node-w0") -> list[tuple[Path, list[bytes]]]:
    return [(f, f.read_bytes().splitlines(keepends=True)) for f in chain_files(directory, chain)]


def test_concurrent_appends_form_one_chain_with_few_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = 0
    real = os.fsync

    def counting(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    records = write(tmp_path, 200)
    assert [r["seq"] for r in records] == list(range(1, 201))
    assert all(records[i]["prev"] == records[i - 1]["hash"] for i in range(1, 200))
    assert syncs < 20  # group commit: far fewer fsyncs than records
    assert verify([tmp_path]).ok


def test_the_chain_continues_across_restarts_and_rotation(tmp_path: Path) -> None:
    first = write(tmp_path, 30, max_file_bytes=4096, one_by_one=True)
    second = write(tmp_path, 30, max_file_bytes=4096, one_by_one=True)
    assert second[0]["seq"] == 31
    assert second[0]["prev"] == first[-1]["hash"]
    assert len(chain_files(tmp_path, "node-w0")) > 2  # rotated by size (a batch is never split across files)
    report = verify([tmp_path])
    assert report.ok
    assert report.chains[0].records == 60


@pytest.mark.reliability
def test_a_record_cut_by_a_crash_is_dropped_on_restart(tmp_path: Path) -> None:
    write(tmp_path, 5)
    (last,) = chain_files(tmp_path, "node-w0")
    with last.open("ab") as f:
        f.write(b'{"chain":"node-w0","seq":6,"half a rec')  # the process died mid-write: never acknowledged
    assert not verify([tmp_path]).ok
    again = write(tmp_path, 1)
    assert again[0]["seq"] == 6
    assert verify([tmp_path]).ok


def test_a_damaged_last_record_stops_the_writer(tmp_path: Path) -> None:
    write(tmp_path, 3)
    (last,) = chain_files(tmp_path, "node-w0")
    last.write_bytes(last.read_bytes() + b"garbage\n")
    with pytest.raises(AuditError, match="ends with a damaged record"):
        write(tmp_path, 1)


def test_one_writer_per_chain(tmp_path: Path) -> None:
    async def go() -> None:
        first = ChainWriter(tmp_path, "node-w0")
        first.open()
        with pytest.raises(AuditError, match="in use by another process"):
            ChainWriter(tmp_path, "node-w0").open()
        await first.close()

    asyncio.run(go())


# --- tampering -------------------------------------------------------------------------------

def _edit_byte(directory: Path) -> None:
    f, rows = lines(directory)[0]
    rows[4] = rows[4].replace(b'"allow":true', b'"allow":fals', 1) if b'"allow":true' in rows[4] else \
        rows[4].replace(b'"allow":false', b'"allow":true ', 1)
    f.write_bytes(b"".join(rows))


def _edit_field(directory: Path) -> None:
    f, rows = lines(directory)[0]
    doc = json.loads(rows[4])
    doc["allow"] = not doc["allow"]
    rows[4] = (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
    f.write_bytes(b"".join(rows))


def _delete(directory: Path) -> None:
    f, rows = lines(directory)[0]
    del rows[4]
    f.write_bytes(b"".join(rows))


def _swap(directory: Path) -> None:
    f, rows = lines(directory)[0]
    rows[4], rows[5] = rows[5], rows[4]
    f.write_bytes(b"".join(rows))


def _cut_tail(directory: Path) -> None:
    f, rows = lines(directory)[0]
    f.write_bytes(b"".join(rows[:-3]))


@pytest.mark.parametrize(("tamper", "problem"), [
    (_edit_byte, "record 5 is not a valid record (edited)"),
    (_edit_field, "record 5 was edited (its content does not match its hash)"),
    (_delete, "record 5 missing before record 6 (deleted)"),
    (_swap, "record 6 comes before record 5 (reordered)"),
    (_cut_tail, "a checkpoint vouches for record 12 but the log ends at record 9 (truncated)"),
])
def test_verify_names_the_first_bad_record(tmp_path: Path, run_cli: Run, tamper: Callable[[Path], None],
                                           problem: str) -> None:
    key = Ed25519PrivateKey.generate()
    write(tmp_path, 12, key=key)
    public = tmp_path.parent / f"{tmp_path.name}.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    intact = run_cli("audit", "verify", str(tmp_path), "--key", str(public))
    assert intact.exit_code == 0, intact.output
    assert "node-w0: 12 record(s), 1 checkpoint(s) verified: ok" in intact.output
    tamper(tmp_path)
    result = run_cli("audit", "verify", str(tmp_path), "--key", str(public))
    assert result.exit_code == 2
    assert problem in result.output


def test_a_forged_checkpoint_is_refused(tmp_path: Path, run_cli: Run) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    write(tmp_path, 4, key=key)
    pem = tmp_path.parent / "other.pem"
    pem.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    result = run_cli("audit", "verify", str(tmp_path), "--key", str(pem))
    assert result.exit_code == 2
    assert "checkpoint signature does not verify" in result.output


def test_without_checkpoints_verify_says_a_cut_tail_is_invisible(tmp_path: Path, run_cli: Run) -> None:
    write(tmp_path, 3)
    result = run_cli("audit", "verify", str(tmp_path))
    assert result.exit_code == 0
    assert "no checkpoints, so a cut tail cannot be detected" in result.stderr


def test_verify_on_nothing_is_an_error(tmp_path: Path, run_cli: Run) -> None:
    assert run_cli("audit", "verify", str(tmp_path)).exit_code == 1


# --- reading -----------------------------------------------------------------------------------

def test_query_tail_and_export(tmp_path: Path, run_cli: Run) -> None:
    write(tmp_path, 10)
    denies = [json.loads(x) for x in run_cli("audit", "query", str(tmp_path), "--decision", "deny").output.splitlines()]
    assert [r["seq"] for r in denies] == [2, 4, 6, 8, 10]
    user1 = run_cli("audit", "query", str(tmp_path), "--subject", "user1", "--reason", "default_deny").output
    assert [json.loads(x)["decision_id"] for x in user1.splitlines()] == ["d0001", "d0007"]
    table = run_cli("audit", "query", str(tmp_path), "--format", "table", "--since", "2026-11-30T12:00:08Z").output
    assert len(table.splitlines()) == 3 and "tool.call crm.query" in table  # noqa: PT018
    assert len(run_cli("audit", "tail", str(tmp_path), "-n", "3").output.splitlines()) == 3
    opa = [json.loads(x) for x in run_cli("audit", "export", str(tmp_path)).output.splitlines()]
    assert opa[0]["decision_id"] == "d0000"
    assert opa[0]["result"]["allow"] is True
    assert opa[0]["path"] == "agentgov/decision"
    ocsf = [json.loads(x) for x in run_cli("audit", "export", str(tmp_path), "--format", "ocsf").output.splitlines()]
    assert (ocsf[1]["class_uid"], ocsf[1]["disposition"], ocsf[1]["status_detail"]) == (6003, "Blocked", "default_deny")


def test_keygen_writes_a_private_and_a_public_key(tmp_path: Path, run_cli: Run) -> None:
    result = run_cli("audit", "keygen", "--out", str(tmp_path / "cp.pem"))
    assert result.exit_code == 0
    assert oct((tmp_path / "cp.pem").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "cp.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert run_cli("audit", "keygen", "--out", str(tmp_path / "cp.pem")).exit_code == 1  # never overwrites


@pytest.mark.parametrize(("doc", "message"), [
    ({"dir": "a", "colour": 1}, "unknown key(s) audit.colour"),
    ({"checkpoint_key_file": "k"}, "audit needs `dir`"),
    ({"dir": "a", "checkpoint_key_file": "missing.pem"}, "cannot load an Ed25519 private key"),
    ({"dir": "a", "checkpoint_every_s": 0}, "checkpoint_every_s must be a positive number"),
    ({"dir": "a", "sinks": [{"type": "splunk", "url": "http://x"}]}, "audit.sinks[0].type must be opa_http"),
    ({"dir": "a", "sinks": [{"type": "opa_http", "url": "ftp://x"}]}, "audit.sinks[0].url must be an http(s) URL"),
])
def test_audit_settings_errors_are_clear(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    from agentgov.engine.config import ConfigError, build_governor, load_config

    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(Path(__file__).parent.parent / "policies")]},
                                "identity": {"required": False}, "audit": doc}))
    with pytest.raises(ConfigError) as err:
        build_governor(load_config(path))
    assert message in str(err.value)


def test_a_write_failure_denies_instead_of_deciding_unrecorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgov.engine.config import build_governor, load_config

    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(Path(__file__).parent.parent / "policies")]},
                                "identity": {"required": False}, "audit": {"dir": "audit"}}))
    gov = build_governor(load_config(path))
    stated = {"subject": {"id": "a", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
              "action": {"kind": "tool.call", "name": "web.search"}, "resource": {"type": "tool", "id": "web.search"}}

    def broken_disk(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    async def go() -> tuple[bool, int, tuple[str, ...]]:
        await gov.start()
        ok = (await gov.decide_stated(stated)).decision.allow
        monkeypatch.setattr(os, "fsync", broken_disk)
        failed = (await gov.decide_stated(stated)).decision
        monkeypatch.undo()
        await gov.close()
        return ok, failed.status, failed.reasons

    assert asyncio.run(go()) == (True, 503, ("hook_error",))


def test_files_also_rotate_by_age(tmp_path: Path) -> None:
    async def go() -> None:
        writer = ChainWriter(tmp_path, "node-w0", max_file_age_s=0.05)
        writer.open()
        await writer.append(body(0))
        await asyncio.sleep(0.1)
        await writer.append(body(1))
        await writer.close()

    asyncio.run(go())
    assert len(chain_files(tmp_path, "node-w0")) == 2
    assert verify([tmp_path]).ok


def test_session_decisions_export_as_ocsf_authorize_session() -> None:
    from agentgov.engine.hooks.audit.sinks import ocsf_event

    record = {**body(1), "status": 401, "reasons": ["invalid_token"], "actions": []}
    assert ocsf_event(record)["class_uid"] == 3003
    assert ocsf_event(body(0))["class_uid"] == 6003


CRASHING_WRITER = """
import asyncio, os, sys
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from agentgov.engine.hooks.audit.chain import ChainWriter

async def main():
    key = load_pem_private_key(Path(sys.argv[2]).read_bytes(), None)
    writer = ChainWriter(Path(sys.argv[1]), "node-w0", signing_key=key, checkpoint_every_s=3600)
    writer.open()
    for i in range(int(sys.argv[3])):
        await writer.append({"v": 1, "decision_id": f"c{i}", "allow": True})
    os._exit(9)  # killed: no shutdown checkpoint, no close

asyncio.run(main())
"""


@pytest.mark.reliability
def test_a_chain_resumed_after_a_crash_is_sealed_at_once(tmp_path: Path, run_cli: Run) -> None:
    """Records written after the last checkpoint by a process that was killed are checkpointed as
    soon as the chain is resumed, with no new traffic: cutting them off is then detected."""
    import subprocess
    import sys

    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    logs = tmp_path / "audit"
    write(logs, 3, key=key)  # a clean shutdown: 3 records, sealed
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(logs), str(pem), "5"], check=False)
    assert crashed.returncode == 9
    checkpoints = logs / "node-w0.checkpoints.jsonl"
    assert json.loads(checkpoints.read_bytes().splitlines()[-1])["seq"] == 3  # the 5 new ones are unsealed

    async def resume_and_stop() -> None:
        writer = ChainWriter(logs, "node-w0", signing_key=key, checkpoint_every_s=3600)
        writer.open()
        assert json.loads(checkpoints.read_bytes().splitlines()[-1])["seq"] == 8  # sealed on resume
        await writer.close()

    asyncio.run(resume_and_stop())
    assert len(checkpoints.read_bytes().splitlines()) == 2  # nothing new at shutdown: nothing signed twice
    (file, content), = lines(logs)
    file.write_bytes(b"".join(content[:-2]))  # cut the last two records the crashed process wrote
    result = run_cli("audit", "verify", str(logs), "--key", str(pem))
    assert result.exit_code == 2
    assert "checkpoint" in result.output
