"""What happened, end to end through the real Envoy: every decision from every door is in the
hash-chained log before its answer goes out, survives kill -9, verifies, and reaches an OPA
decision-log sink even across the sink's own outage."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentgov.cli.stack import LocalStack
from agentgov.engine.hooks.audit.verify import log_files, read_records, verify
from agentgov.engine.proto import decision_pb2 as pb
from tests.conftest import POLICIES
from tests.http_helpers import CALL, LoopbackServer, bearer, decide, post, send
from tests.support import records, wait_for, workers_of

pytestmark = pytest.mark.envoy


class DecisionLogSink(LoopbackServer):
    """A real HTTP server speaking OPA's decision-log API (POST /logs, gzip'd JSON array), which a
    test can take down and bring back on the same port."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/logs"
                assert self.headers["content-encoding"] == "gzip"
                owner.events.extend(json.loads(gzip.decompress(raw)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


def audited_stack(base: Path, sink: DecisionLogSink | None, workers: int = 2) -> LocalStack:
    key = Ed25519PrivateKey.generate()
    (base / "cp.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    audit: dict[str, Any] = {"dir": str(base / "audit"), "checkpoint_key_file": str(base / "cp.pem"),
                             "checkpoint_every_s": 0.5}
    if sink is not None:
        audit["sinks"] = [{"type": "opa_http", "url": f"http://127.0.0.1:{sink.port}", "flush_every_s": 0.2,
                           "buffer_records": 5000}]
    return LocalStack(policies=POLICIES, workers=workers, data_api=True, ext_proc=True, config_extra={"audit": audit},
                      workdir=base / "stack")


@pytest.fixture(scope="module")
def sink() -> Iterator[DecisionLogSink]:
    s = DecisionLogSink()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sink: DecisionLogSink) -> Iterator[LocalStack]:
    base = tmp_path_factory.mktemp("audited")
    s = audited_stack(base, sink)
    s.base = base  # type: ignore[attr-defined]
    with s:
        yield s


def audit_dir(stack: LocalStack) -> Path:
    return stack.base / "audit"  # type: ignore[attr-defined,no-any-return]


def by_id(stack: LocalStack) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records(audit_dir(stack)):
        out.setdefault(r["decision_id"], []).append(r)
    return out


def test_every_door_and_every_early_deny_is_recorded(stack: LocalStack) -> None:
    alice = stack.keys.token("alice", ["analyst"], "acme")
    status, headers, _ = send(stack, "/mcp", CALL, bearer(alice))
    assert status == 200
    allowed_id = json.loads(headers["x-demo-seen"])["x-agentgov-decision-id"]
    _, _, unauth = send(stack, "/mcp", CALL, {"authorization": "Bearer nope"})
    _, _, malformed = send(stack, "/mcp", None, bearer(alice), raw=b'{"jsonrpc": ')
    described = decide(f"127.0.0.1:{stack.agentgov_ports[0]}", pb.DecideRequest(action=pb.ActionRequest(
        credential=alice, kind="tool.call", name="crm.query", arguments_json='{"tenant_id": "acme"}')))
    stated = {"subject": {"id": "bob", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
              "action": {"kind": "tool.call", "name": "web.search"}, "resource": {"type": "tool", "id": "web.search"}}
    post(f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision", {"input": stated})
    log = by_id(stack)  # already durable: each answer above waited for its record's fsync
    assert log[allowed_id][0]["allow"] is True
    assert log[allowed_id][0]["subject"]["id"] == "alice"
    assert log[unauth["decision_id"]][0]["status"] == 401
    assert log[malformed["decision_id"]][0]["reasons"] == ["malformed_request"]
    assert log[described.decision_id][0]["entry_point"] == "decision_service"
    data_api = [r for rs in log.values() for r in rs if r["entry_point"] == "data_api"]
    assert data_api[-1]["subject"]["id"] == "bob"
    assert "nope" not in json.dumps(log[unauth["decision_id"]][0])  # never the credential
    assert all(alice not in json.dumps(r) for rs in log.values() for r in rs)


def test_a_response_decision_is_recorded_too(stack: LocalStack) -> None:
    alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    call = {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "fixture": "email"}}}
    status, headers, _ = send(stack, "/mcp", call, alice)
    assert status == 200
    decision_id = json.loads(headers["x-demo-seen"])["x-agentgov-decision-id"]
    phases = {r["phase"]: r for r in by_id(stack)[decision_id]}
    assert set(phases) == {"request", "response"}
    assert phases["response"]["entry_point"] == "ext_proc"
    assert phases["response"]["obligations"]["redact"] == ["EMAIL"]


def test_a_newline_in_a_tool_name_cannot_make_a_second_record(stack: LocalStack) -> None:
    forged = 'web.search\n{"decision_id":"forged","allow":true}'
    _, _, body = send(stack, "/mcp", {**CALL, "params": {"name": forged, "arguments": {}}},
                      bearer(stack.keys.token("alice", ["analyst"], "acme")))
    (record,) = by_id(stack)[body["decision_id"]]
    assert record["actions"][0]["name"] == forged  # intact, as one JSON string
    assert "forged" not in by_id(stack)
    for files in log_files([audit_dir(stack)]).values():
        for _, _, raw in read_records(files):
            assert raw.count(b"\n") == 1


def test_the_sink_gets_every_record_in_opa_format_across_its_outage(stack: LocalStack, sink: DecisionLogSink) -> None:
    alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    sink.stop()
    down_ids = []
    for _ in range(15):
        _, headers, _ = send(stack, "/mcp", CALL, alice)
        down_ids.append(json.loads(headers["x-demo-seen"])["x-agentgov-decision-id"])
    time.sleep(1.0)  # deliveries fail meanwhile, and are retried
    sink.start()
    expected = {r["decision_id"] for r in records(audit_dir(stack))}
    assert wait_for(lambda: expected <= {e["decision_id"] for e in sink.events}, 20)
    assert set(down_ids) <= {e["decision_id"] for e in sink.events}
    event = next(e for e in sink.events if e["decision_id"] == down_ids[0])
    assert event["path"] == "agentgov/decision"
    assert event["result"]["allow"] is True
    assert event["input"]["subject"]["id"] == "alice"
    assert set(event) >= {"labels", "decision_id", "timestamp", "input", "result", "bundles"}


@pytest.mark.reliability
def test_kill_9_under_load_loses_nothing_that_was_answered(tmp_path: Path) -> None:
    stack = audited_stack(tmp_path, None)
    stack.keep_workdir = True  # under tmp_path: pytest keeps and cleans it
    stack.start()
    try:
        parent = stack.procs["agentgov"].pid
        assert wait_for(lambda: len(workers_of(parent)) == 2)
        alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        dev = bearer(stack.keys.token("dev1", ["developer"], "acme"))
        answered: list[str] = []
        stop = threading.Event()

        def load(headers: dict[str, str]) -> None:
            while not stop.is_set():
                status, answer_headers, body = send(stack, "/mcp", CALL, headers)
                if status == 200:
                    answered.append(json.loads(answer_headers["x-demo-seen"])["x-agentgov-decision-id"])
                elif status == 403:
                    answered.append(body["decision_id"])

        threads = [threading.Thread(target=load, args=(h,)) for h in (alice, alice, dev)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(answered) >= 50)  # under load before the kill
        os.kill(workers_of(parent)[0], signal.SIGKILL)
        at_kill = len(answered)
        # Load goes on through the kill until the restarted worker has answered too.
        assert wait_for(lambda: len(workers_of(parent)) == 2 and len(answered) >= at_kill + 100, 20)
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stack.stop()
    report = verify([tmp_path / "audit"])
    assert report.ok, [c.problem for c in report.chains]
    logged = {r["decision_id"] for r in records(tmp_path / "audit")}
    assert len(answered) > 50
    missing = [d for d in answered if d not in logged]
    assert missing == []
