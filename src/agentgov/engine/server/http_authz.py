"""Envoy ext_authz over plain HTTP (Envoy's `http_service` mode): the fast transport.

Envoy sends the original method, `path_prefix` + the original path, the headers and the raw body;
agentgov answers 200 to allow (the headers Envoy's `allowed_upstream_headers` lets through are set on
the request to the backend, `x-envoy-auth-headers-to-remove` lists what to remove) or the deny's
status, headers and JSON body. The same decision runner as the gRPC transport decides; only the
wire differs. Measured here, a do-nothing Python gRPC ext_authz costs ~425 µs of CPU per check and
this transport ~21 µs (docs/benchmarks.md), so it is the default in `agentgov envoy-config`.

Hand-written on a raw asyncio protocol with httptools (llhttp, Node's parser) rather than a web
framework: the per-request overhead is the point, and a framework's routing, middleware and request
objects cost more than the whole check. What HTTP mode cannot carry is refused, never dropped:
policy-set dynamic metadata and query parameter changes (OPA-Envoy mode) need the gRPC transport
(ext_proc's exchange document travels as a header Envoy turns into metadata); a header the
bootstrap does not let through (an obligation header not named `x-…`, a client header other than
`ratelimit-…`) would be lost, so the check fails closed with 503 and an operator log line instead.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.metrics import LATENCY, count_decision
from agentgov.engine.pipeline import Decider, Envelope, Verdict
from agentgov.engine.server.exchange import EXCHANGE_HEADER, exchange_header
from agentgov.engine.server.failures import door_failed
from agentgov.engine.server.responses import allowed, denied, error_body

log = logging.getLogger("agentgov.http_authz")

EXT_AUTHZ_PREFIX = "/ext_authz"  # Envoy's `path_prefix`: the original path follows it
# Set by Envoy (authorization_request.headers_to_add, overwriting what a client sent) from the
# downstream address: HTTP mode has no other way to hand over the client's address.
SOURCE_IP_HEADER = "x-agentgov-source-ip"
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
# What the bootstrap lets through (envoy_bootstrap.py keeps the same lists).
UPSTREAM_PREFIX = "x-"
CLIENT_ON_SUCCESS_PREFIX = "ratelimit-"
MAX_HEADER_BYTES = 64 * 1024
MAX_PENDING = 32  # requests queued on one connection before it stops being read
_LATENCY = LATENCY.labels(api="ext_authz_http")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")  # control characters, or not Latin-1
_BAD_NAME = re.compile(r"[^!#$%&'*+.^_`|~0-9A-Za-z-]")  # not an RFC 9110 token character
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; a repeated header joined with ", " (as Envoy joins them)
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def encode(self, keep_alive: bool) -> bytes:
        lines = [_STATUS_LINES.get(self.status) or f"HTTP/1.1 {self.status} Unknown", f"content-length: {len(self.body)}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if not keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


Handler = Callable[[Request], Awaitable[Response]]


def header_value_ok(value: str) -> bool:
    """Whether `value` can be written as an HTTP/1.1 header value as it is."""
    return _BAD_VALUE.search(value) is None


def token_matches(authorization: str, expected: bytes) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


class Unrepresentable(ValueError):
    """An answer HTTP mode cannot carry faithfully: the check fails closed (503)."""


def _checked(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header names and values as they will be written. A value with a control character (a JWT
    claim with a newline in a subject id) would split the response and let the caller forge
    headers Envoy trusts: refused."""
    out = list(headers)
    for name, value in out:
        if not name or _BAD_NAME.search(name) or not header_value_ok(value):
            raise Unrepresentable(f"header {name[:40]!r} cannot be written on the HTTP transport (a control "
                                  "character, or not Latin-1)")
    return out


class AuthzHandler:
    """Routes: `/ext_authz/<original path>` (a check), `/health`; others are 404. Extra routes (the
    AuthZEN API) can be mounted by prefix."""

    def __init__(self, decider: Decider, *, exchange: bool = False) -> None:
        self.decider = decider
        self.exchange = exchange
        self.routes: dict[str, Handler] = {}
        self.serving = True

    async def __call__(self, request: Request) -> Response:
        target = request.target
        if target.startswith(EXT_AUTHZ_PREFIX + "/") or target == EXT_AUTHZ_PREFIX:
            return await self.check(request, target[len(EXT_AUTHZ_PREFIX):] or "/")
        if target == "/health":
            return Response(200 if self.serving else 503, [("content-type", "application/json")],
                            b'{"status":"serving"}' if self.serving else b'{"status":"draining"}')
        for prefix, route in self.routes.items():
            if target.startswith(prefix):
                return await route(request)
        return Response(404, [("content-type", "application/json")], b'{"error":"not_found"}')

    async def check(self, request: Request, path: str) -> Response:
        started = time.perf_counter()
        try:
            headers = request.headers
            # Kept among the headers: the request to the backend may carry a client's copy, which the
            # spoofed x-agentgov-* rule then removes.
            source_ip = headers.get(SOURCE_IP_HEADER, "")
            env = Envelope(method=request.method.upper(), path=path, host=headers.get("host", ""), headers=headers,
                           body=request.body, body_truncated=headers.get(PARTIAL_BODY_HEADER, "").lower() == "true",
                           source_ip=source_ip, request_id=headers.get("x-request-id", ""))
            verdict = await self.decider.decide(env)
            response = self._answer(verdict, headers.keys(), self.exchange)
            count_decision("ext_authz_http", verdict.decision)
            if verdict.decision.errors:
                log.warning("decision %s: %s", verdict.decision_id, "; ".join(verdict.decision.errors))
        except Unrepresentable as exc:
            # What the policy answered cannot be written on this transport: an internal failure of the
            # deployment (use the gRPC transport), refused like any other; the log says which.
            failed = await door_failed("ext_authz_http", Failure.INTERNAL, REASON_INTERNAL,
                                       local=self.decider.local, why=f"unrepresentable on HTTP: {exc}")
            response = _unavailable(failed)
        except Exception:
            failed = await door_failed("ext_authz_http", Failure.INTERNAL, REASON_INTERNAL, local=self.decider.local)
            response = _unavailable(failed)
        _LATENCY.observe(time.perf_counter() - started)
        return response

    @staticmethod
    def _answer(verdict: Verdict, client_headers: Iterable[str], exchange: bool) -> Response:
        decision = verdict.decision
        directives = decision.directives
        if directives is not None and (directives.dynamic_metadata or directives.query_parameters_to_set
                                       or directives.query_parameters_to_remove):
            raise Unrepresentable("the policy set dynamic metadata or query parameters: use the gRPC transport")
        if decision.allow:
            parts = allowed(verdict, client_headers)
            stray = [k for k, _ in parts.upstream if not k.lower().startswith(UPSTREAM_PREFIX)]
            stray += [k for k, _, _ in parts.client if not k.lower().startswith(CLIENT_ON_SUCCESS_PREFIX)]
            if stray:
                raise Unrepresentable(f"header(s) {', '.join(sorted(stray))} cannot pass Envoy's HTTP ext_authz "
                                      "lists (upstream: x-*, client: ratelimit-*): use the gRPC transport")
            headers = [(k.lower(), v) for k, v in parts.upstream] + [(k.lower(), v) for k, v, _ in parts.client]
            if parts.remove:
                headers.append((HEADERS_TO_REMOVE, ",".join(parts.remove)))
            if exchange:  # for ext_proc, through Envoy's dynamic metadata
                headers.append((EXCHANGE_HEADER, exchange_header(verdict)))
            return Response(200, _checked(headers))
        deny = denied(verdict)
        return Response(deny.status, _checked((k, v) for k, v, _ in deny.headers), deny.body.encode())


def _unavailable(verdict: Verdict) -> Response:
    """A door failure, rendered from the error table without the headers that could not be written.
    Envoy turns any 5xx from an HTTP authorizer into its own status_on_error (503): fail closed."""
    d = verdict.decision
    return Response(d.status, [("content-type", "application/json"), ("x-agentgov-decision-id", verdict.decision_id)],
                    error_body(d.status, d.reasons, verdict.decision_id))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection from Envoy: requests are parsed as bytes arrive and answered in
    order (pipelining-safe); bounded headers, body and queue."""

    def __init__(self, handler: Handler, max_body_bytes: int, connections: set[_Connection]) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request | Response, bool]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large: int | None = None
        self._paused = False

    # --- transport callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "upgrade is not supported")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")

    # --- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._too_large = b"", {}, [], 0, None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url), 431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value), 431)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_HEADER_BYTES + self.max_body_bytes:
            self._too_large = 413
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if self._too_large is not None:
            item: Request | Response = Response(self._too_large, [("content-type", "application/json")],
                                                b'{"error":"request_too_large"}')
        else:
            item = Request(self.parser.get_method().decode("latin-1"), self._url.decode("latin-1"), self._headers,
                           b"".join(self._body))
        self.queue.append((item, keep_alive))
        if len(self.queue) >= MAX_PENDING and self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._serve())

    def _grow(self, n: int, status: int) -> None:
        self._size += n
        if self._size > MAX_HEADER_BYTES:
            self._too_large = status

    # --- answering -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while self.queue and self.transport is not None:
            item, keep_alive = self.queue.popleft()
            try:
                response = item if isinstance(item, Response) else await self.handler(item)
            except Exception:
                # Routes map their own errors; this is the last line: an answer, never a hung
                # connection. Envoy turns a 5xx into its status_on_error (fail closed).
                log.exception("internal error answering a request on the HTTP listener")
                response = Response(500, [("content-type", "application/json")], b'{"error":"internal_error"}')
            if self.transport is None:
                return
            self.transport.write(response.encode(keep_alive))
            if not keep_alive:
                self.transport.close()
                return
            if self._paused and len(self.queue) < MAX_PENDING // 4:
                self.transport.resume_reading()
                self._paused = False

    def _reject(self, status: int, why: str) -> None:
        if self.transport is not None:
            body = ('{"error":"bad_request","detail":"' + why + '"}').encode()
            self.transport.write(Response(status, [("content-type", "application/json")], body).encode(False))
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.queue and (self.worker is None or self.worker.done())


class HttpServer:
    """The listener of one worker: start, then `stop(drain_s)` refuses new connections, lets the
    requests in flight finish, and closes what is left."""

    def __init__(self, handler: Handler, *, max_body_bytes: int) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    def _protocol(self) -> _Connection:
        return _Connection(self.handler, self.max_body_bytes, self.connections)

    async def start(self, host: str, port: int, *, socket_path: str | None = None,
                    ssl: object | None = None) -> None:
        loop = asyncio.get_running_loop()
        if socket_path:
            self._server = await loop.create_unix_server(self._protocol, socket_path, ssl=ssl)  # type: ignore[arg-type]
        else:
            self._server = await loop.create_server(self._protocol, host, port, ssl=ssl,  # type: ignore[arg-type]
                                                    reuse_port=False)

    async def stop(self, drain_s: float) -> None:
        if self._server is None:
            return
        self._server.close()
        deadline = time.monotonic() + drain_s
        while any(not c.idle for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
