"""Small HTTP and gRPC helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from agentgov.cli.stack import LocalStack, free_port
from agentgov.engine.proto import BATCH_DECIDE, DECIDE
from agentgov.engine.proto import decision_pb2 as pb

CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "query": "deals"}}}


def request(url: str, method: str = "POST", body: Any = None, headers: dict[str, str] | None = None,
            raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call; an error status is an answer here, not an exception."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def post(url: str, body: Any, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """A POST whose answer is decoded as JSON when it is JSON."""
    status, answer_headers, text = request(url, "POST", body, headers, raw)
    try:
        doc = json.loads(text) if text else None
    except json.JSONDecodeError:
        doc = text.decode()
    return status, answer_headers, doc


def send(stack: LocalStack, path: str, body: Any, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    return post(stack.url + path, body, headers, raw)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def decide(target: str, request: pb.DecideRequest, credentials: grpc.ChannelCredentials | None = None,
           timeout: float = 5) -> pb.DecideResponse:
    with (grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)) as channel:
        call = channel.unary_unary(DECIDE, request_serializer=pb.DecideRequest.SerializeToString,
                                   response_deserializer=pb.DecideResponse.FromString)
        response: pb.DecideResponse = call(request, timeout=timeout)
        return response


def batch_decide(target: str, request: pb.BatchDecideRequest) -> pb.BatchDecideResponse:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(BATCH_DECIDE, request_serializer=pb.BatchDecideRequest.SerializeToString,
                                   response_deserializer=pb.BatchDecideResponse.FromString)
        response: pb.BatchDecideResponse = call(request, timeout=5)
        return response


class LoopbackServer:
    """A real HTTP server on a fixed loopback port that a test can take down and bring back on the
    same port (a sink or a bundle source that goes away). Subclasses give `_handler()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
