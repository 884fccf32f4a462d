"""`agentgov audit verify`: walk every chain in a log and say whether it is intact, and if not,
which record is the first bad one and what is wrong with it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentgov.engine.hooks.audit.chain import CHECKPOINTS_SUFFIX, FILE_PATTERN, checkpoint_payload
from agentgov.engine.hooks.audit.record import GENESIS, record_hash


@dataclass
class ChainReport:
    chain: str
    records: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    problem: str | None = None  # the first thing wrong, naming the record (None: intact)


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.chains) and all(c.problem is None for c in self.chains)


def load_verify_key(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        private = serialization.load_pem_private_key(data, password=None)
        if isinstance(private, Ed25519PrivateKey):
            return private.public_key()
    except (ValueError, TypeError):
        pass
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return public


def log_files(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Chain name → its files in order, from directories and files given."""
    chains: dict[str, list[Path]] = {}
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            match = FILE_PATTERN.match(file.name)
            if match:
                chains.setdefault(match["chain"], []).append(file)
    for files in chains.values():
        files.sort(key=lambda f: int(FILE_PATTERN.match(f.name)["first"]))  # type: ignore[index]
    return chains


def read_records(files: list[Path]) -> Iterator[tuple[Path, int, bytes]]:
    for file in files:
        with file.open("rb") as f:
            for number, line in enumerate(f, start=1):
                yield file, number, line


def verify(paths: Iterable[Path], key: Ed25519PublicKey | None = None) -> VerifyReport:
    paths = list(paths)
    report = VerifyReport()
    for chain, files in sorted(log_files(paths).items()):
        report.chains.append(_verify_chain(chain, files, key, report))
    if not report.chains:
        report.notes.append("no audit log files found")
    return report


def _verify_chain(chain: str, files: list[Path], key: Ed25519PublicKey | None, report: VerifyReport) -> ChainReport:
    result = ChainReport(chain)
    expected, prev = 1, GENESIS
    hashes: dict[int, str] = {}
    rows = list(read_records(files))
    for index, (file, number, raw) in enumerate(rows):
        where = f"{file.name}:{number}"
        if not raw.endswith(b"\n"):
            result.problem = f"{where}: the last record is cut short (truncated mid-line)"
            return result
        try:
            record: dict[str, Any] = json.loads(raw)
            seq, claimed, link = int(record["seq"]), str(record["hash"]), str(record["prev"])
        except (ValueError, KeyError, TypeError):
            result.problem = f"{where}: record {expected} is not a valid record (edited)"
            return result
        if record.get("chain") != chain:
            result.problem = f"{where}: record {seq} belongs to chain {record.get('chain')!r}, not {chain!r} (moved)"
            return result
        if record_hash(record) != claimed:
            result.problem = f"{where}: record {seq} was edited (its content does not match its hash)"
            return result
        if seq > expected:
            if _appears_later(rows[index + 1:], expected):
                result.problem = f"{where}: record {seq} comes before record {expected} (reordered)"
                return result
            missing = f"record {expected}" if seq == expected + 1 else f"records {expected}-{seq - 1}"
            result.problem = f"{where}: {missing} missing before record {seq} (deleted)"
            return result
        if seq < expected:
            result.problem = f"{where}: record {seq} is out of order, record {expected} was expected (reordered)"
            return result
        if link != prev:
            result.problem = f"{where}: record {seq} does not follow record {seq - 1} (the chain is broken here)"
            return result
        hashes[seq] = claimed
        prev, expected = claimed, expected + 1
        result.records += 1
    result.head_seq = expected - 1
    _check_checkpoints(chain, files[0].parent if files else Path("."), hashes, result, key, report)
    return result


def _appears_later(rows: list[tuple[Path, int, bytes]], seq: int) -> bool:
    needle = f'"seq":{seq},'.encode()
    for _, _, raw in rows:
        if needle in raw:
            try:
                if int(json.loads(raw)["seq"]) == seq:
                    return True
            except (ValueError, KeyError, TypeError):
                continue
    return False


def _check_checkpoints(chain: str, directory: Path, hashes: dict[int, str], result: ChainReport,
                       key: Ed25519PublicKey | None, report: VerifyReport) -> None:
    path = directory / f"{chain}{CHECKPOINTS_SUFFIX}"
    if not path.exists():
        report.notes.append(f"chain {chain}: no checkpoints, so a cut tail cannot be detected "
                            "(set audit.checkpoint_key_file)")
        return
    if key is None:
        report.notes.append(f"chain {chain}: checkpoints found but not authenticated (give --key)")
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        where = f"{path.name}:{number}"
        try:
            cp = json.loads(raw)
            seq, head, at, sig = int(cp["seq"]), str(cp["hash"]), str(cp["time"]), base64.b64decode(cp["sig"])
        except (ValueError, KeyError, TypeError):
            result.problem = f"{where}: checkpoint is not valid (edited)"
            return
        if key is not None:
            try:
                key.verify(sig, checkpoint_payload(chain, seq, head, at))
            except InvalidSignature:
                result.problem = f"{where}: checkpoint signature does not verify (forged, or another key)"
                return
        if seq > result.head_seq:
            result.problem = (f"{where}: a checkpoint vouches for record {seq} but the log ends at record "
                              f"{result.head_seq} (truncated)")
            return
        if hashes.get(seq) != head:
            result.problem = f"{where}: checkpoint mismatch at record {seq} (the log differs from what was signed)"
            return
        result.checkpoints += 1
