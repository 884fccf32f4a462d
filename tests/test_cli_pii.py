"""`agentgov pii scan`: offsets and types on stdout (never the values), JSON lines for bulk runs,
clear errors and exit 1 for bad input or settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _run(args: tuple[str, ...], stdin: bytes) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "pii", "scan", *args], input=stdin,
                          capture_output=True, timeout=60, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_text_on_stdin_gives_offsets_and_types() -> None:
    text = "write to jane.doe@example.org, card 4111 1111 1111 1111"
    proc = _run((), text.encode())
    assert proc.returncode == 0
    found = json.loads(proc.stdout)
    assert found == [{"start": 9, "end": 29, "type": "EMAIL"}, {"start": 36, "end": 55, "type": "CREDIT_CARD"}]
    assert "jane.doe" not in proc.stdout
    assert [text[f["start"]:f["end"]] for f in found] == ["jane.doe@example.org", "4111 1111 1111 1111"]


def test_jsonl_gives_one_line_per_input_line() -> None:
    lines = [json.dumps(t) for t in ("nothing here", "ip 10.1.2.3", "é AKIAQ7RZ3KXW5MN2PL4T")]
    proc = _run(("--jsonl",), ("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert out == [[], [{"start": 3, "end": 11, "type": "IP_ADDRESS"}], [{"start": 2, "end": 22, "type": "AWS_KEY"}]]


def test_the_dev_corpus_runs_in_bulk() -> None:
    texts = [json.loads(line)["text"] for line in (REPO / "tests/data/pii/pii_dev.jsonl").read_text().splitlines()]
    proc = _run(("--jsonl",), "\n".join(json.dumps(t) for t in texts).encode())
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == len(texts)


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("--jsonl",), b'"ok"\n{"a": 1}\n', "line 2: expected a JSON string, got dict"),
    (("--jsonl",), b'"ok"\nnot json\n', "line 2: not JSON"),
    ((), b"\xff\xfe bad", "standard input is not valid UTF-8"),
])
def test_bad_input_is_a_clear_error(args: tuple[str, ...], stdin: bytes, message: str) -> None:
    proc = _run(args, stdin)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_come_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "agentgov.yaml"
    config.write_text("identity: {required: false}\npii: {disabled_types: [EMAIL]}\n")
    assert json.loads(_run(("--config", str(config)), b"jane.doe@example.org").stdout) == []
    config.write_text("pii: {types: [SOCIAL]}\n")
    proc = _run(("--config", str(config)), b"x")
    assert proc.returncode == 1
    assert "pii.types: unknown type(s) SOCIAL" in proc.stderr
