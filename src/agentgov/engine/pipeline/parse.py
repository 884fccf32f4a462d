"""The parse stage: what the request asks for, read once, the way the backend will read it.

Refused here (one reading of a request): a body cut short by the inspection limit, a declared
charset other than UTF-8, and anything the protocol parsers refuse (repeated keys, non-canonical
paths, MCP headers that disagree with the body...)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agentgov.engine.errors import Failure
from agentgov.engine.metrics import STAGE_LATENCY
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.types import Envelope, GovernorOptions
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.classify import classify
from agentgov.engine.protocols.parsed import ParsedAction

MCP_FILTER_NAMESPACE = "envoy.filters.http.mcp"
PARSE_STAGE = STAGE_LATENCY.labels(stage="parse")


def refuse_body(env: Envelope, options: GovernorOptions) -> Decision | None:
    """A deny when the body cannot be read as the backend would read it, else None."""
    if env.body_truncated and not options.allow_truncated_body:
        return Decision.failed(Failure.TOO_LARGE, "body_truncated", error="request body exceeds the inspection limit",
                               detail="the request body exceeds the inspection limit")
    charset = declared_charset(env.headers.get("content-type", ""))
    if env.body and charset not in ("", "utf-8", "utf8"):
        # A backend that honours the declared charset would read other characters than agentgov does.
        return Decision.failed(Failure.UNSUPPORTED_MEDIA, "unsupported_charset",
                               detail="the request body must be UTF-8 (Content-Type declares another charset)")
    return None


def parse(env: Envelope, options: GovernorOptions,
          given: Sequence[ParsedAction] | None) -> tuple[list[ParsedAction], Decision | None, float]:
    """The actions the request carries (or those a caller `given` itself), a deny for a request
    the parsers refuse, and the seconds it took. OPA-Envoy policies judge any body: there a
    refused body is no deny, just no actions (the input builder is the parser)."""
    started = time.perf_counter()
    try:
        if given is not None:
            return list(given), None, observe(PARSE_STAGE, started)
        actions = classify(env.method, env.path, env.host, env.body, options.mcp_paths,
                           mcp_metadata=env.filter_metadata.get(MCP_FILTER_NAMESPACE), headers=env.headers,
                           max_batch=options.max_batch)
        return actions, None, observe(PARSE_STAGE, started)
    except ProtocolError as exc:
        elapsed = observe(PARSE_STAGE, started)
        if options.input_format == "opa-envoy":
            return [], None, elapsed
        return [], malformed(exc), elapsed


def malformed(exc: ProtocolError) -> Decision:
    # ProtocolError messages are written for clients (no parser internals): say what was wrong.
    return Decision.failed(Failure.MALFORMED, "malformed_request", error=str(exc), detail=str(exc))


def declared_charset(content_type: str) -> str:
    """The `charset` parameter of a Content-Type, lower-cased ("" when none is declared)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def observe(stage: Any, started: float) -> float:
    """Record a stage's time in its histogram; return it (seconds)."""
    elapsed = time.perf_counter() - started
    stage.observe(elapsed)
    return elapsed
