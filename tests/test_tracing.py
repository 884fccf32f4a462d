"""OpenTelemetry traces through the real Envoy: a real OTLP/HTTP receiver on loopback decodes the
protobuf it is sent; each decision is one span with a child per stage, continuing the trace the
client started, with GenAI/HTTP attributes and never an argument value; sampling is respected."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from agentgov.cli.stack import LocalStack
from agentgov.engine.config import ConfigError, resolve
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, send
from tests.support import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend((resource, span) for span in scope.spans)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") else \
            v.bool_value if v.HasField("bool_value") else v.double_value
    return out


@pytest.mark.envoy
def test_a_decision_is_one_span_with_its_stages_continuing_the_clients_trace(receiver: OtlpReceiver) -> None:
    tracing = {"endpoint": receiver.url, "sample_ratio": 1.0, "service_name": "agentgov-test", "export_delay_s": 0.2}
    with LocalStack(policies=POLICIES, config_extra={"tracing": tracing}) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        traced = {**token, "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
        status, _, _ = send(stack, "/mcp", CALL, traced)
        assert status == 200
        status, _, body = send(stack, "/mcp", {**CALL, "params": {"name": "hr.lookup", "arguments": {}}}, token)
        assert status == 403

        def decisions() -> list[Any]:
            return [s for _, s in receiver.spans if s.name == "agentgov.decide"]

        assert wait_for(lambda: len(decisions()) >= 2, 20)
    allowed = next(s for s in decisions() if s.trace_id.hex() == TRACE_ID)
    assert allowed.parent_span_id.hex() == PARENT_SPAN  # the client's trace goes on through agentgov
    attributes = _attributes(allowed)
    assert attributes["agentgov.decision"] == "allow"
    assert attributes["gen_ai.tool.name"] == "crm.query"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/mcp"
    assert attributes["enduser.id"] == "alice"
    children = sorted((s for _, s in receiver.spans if s.parent_span_id == allowed.span_id),
                      key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in children] == ["agentgov.identity", "agentgov.parse", "agentgov.hook.pii",
                                          "agentgov.policy"]
    assert all(allowed.start_time_unix_nano <= c.start_time_unix_nano <= c.end_time_unix_nano
               <= allowed.end_time_unix_nano for c in children)
    denied = next(s for s in decisions() if s.trace_id.hex() != TRACE_ID)
    assert _attributes(denied)["agentgov.reason"] == body["reasons"][0]
    assert all(r["service.name"] == "agentgov-test" for r, _ in receiver.spans)
    sent = repr([_attributes(s) for _, s in receiver.spans])
    assert "deals" not in sent  # the tool arguments (query: "deals") never leave in a span


@pytest.mark.envoy
def test_unsampled_decisions_are_not_exported_and_a_parents_choice_is_kept(receiver: OtlpReceiver) -> None:
    tracing = {"endpoint": receiver.url, "sample_ratio": 0.0, "export_delay_s": 0.2}
    with LocalStack(policies=POLICIES, config_extra={"tracing": tracing}) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        for _ in range(5):
            assert send(stack, "/mcp", CALL, token)[0] == 200
        sampled_parent = {**token, "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
        assert send(stack, "/mcp", CALL, sampled_parent)[0] == 200
        assert wait_for(lambda: any(s.name == "agentgov.decide" for _, s in receiver.spans), 20)
    decided = [s for _, s in receiver.spans if s.name == "agentgov.decide"]
    assert [s.trace_id.hex() for s in decided] == [TRACE_ID]  # only the one the caller sampled


def test_tracing_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "agentgov.yaml"
    path.write_text("tracing: {endpoint: collector:4318, sample_ratio: 2}\n")
    with pytest.raises(ConfigError) as err:
        resolve(path)
    assert "tracing.endpoint must be the collector's http(s) URL" in str(err.value)
    assert "tracing.sample_ratio must be a number from 0 to 1" in str(err.value)


def test_an_exporter_that_cannot_load_is_one_config_error_at_start(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """xds-protos ships an older copy of opentelemetry-proto's modules; installed last, it breaks the
    exporter: `serve` must say so before any worker starts, not have every worker die."""
    import builtins

    from agentgov.engine.config import build_governor

    real_import = builtins.__import__

    def broken(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError("cannot import name 'InstrumentationScope' from 'opentelemetry.proto.common.v1.common_pb2'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    path = tmp_path / "agentgov.yaml"
    path.write_text(f"policy: {{paths: ['{POLICIES}']}}\nidentity: {{required: false}}\n"
                    "tracing: {endpoint: 'http://127.0.0.1:4318'}\n")
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ConfigError) as err:
        build_governor(resolve(path))
    assert "tracing: the OTLP exporter cannot be loaded" in str(err.value)
    assert "pip install --force-reinstall --no-deps opentelemetry-proto" in str(err.value)
