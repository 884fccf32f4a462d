"""The records that flow through the decision path: what a door hands in (`Envelope`), what one
hook's part was (`HookRun`) and what comes out (`Verdict`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgov.engine.model import Decision, Subject
from agentgov.engine.protocols.mcp import DEFAULT_MAX_BATCH
from agentgov.engine.protocols.parsed import ParsedAction
from agentgov.engine.telemetry.tracing import TracingSettings

InputFormat = Literal["agentgov", "opa-envoy"]
INPUT_FORMATS: tuple[str, ...] = ("agentgov", "opa-envoy")


@dataclass(frozen=True)
class Envelope:
    """The transport facts of one request, as an adapter read them."""

    method: str
    path: str
    host: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    body_truncated: bool = False
    source_ip: str = ""
    request_id: str = ""
    # Envoy's CheckRequest attributes (protojson), when an ext_authz server forwards them.
    envoy_attributes: Mapping[str, Any] | None = None
    # Envoy dynamic metadata by filter namespace (e.g. the MCP filter's parsed JSON-RPC message).
    filter_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HookRun:
    """One hook's part in one decision: which hook, in which phase, how it went, how long it took."""

    name: str
    phase: str
    outcome: str  # ok | deny | error | timeout (error and timeout then follow the failure mode)
    seconds: float


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    subject: Subject
    decision_id: str
    inputs: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    retry_after_s: int | None = None  # for a 429: when the caller may try again
    action: str = ""  # what was decided, for logs: "tool.call crm.query"
    # Headers that carried an agentgov-only credential (an API key): removed before the backend.
    consumed_headers: tuple[str, ...] = ()
    hooks: tuple[HookRun, ...] = ()  # every hook that ran, in order
    actions: tuple[ParsedAction, ...] = ()  # what was decided, for the response phase (ext_proc)
    response_headers: Mapping[str, str] = field(default_factory=dict)  # hooks' headers for the client
    policy_revision: str = ""  # the policy set that decided: `<revision>@sha256:<digest>`
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # parse, policy (hooks are in `hooks`)


@dataclass(frozen=True)
class GovernorOptions:
    allow_truncated_body: bool = False
    can_redact: bool = False  # true once a body-rewriting enforcement point (ext_proc) is configured
    mcp_paths: tuple[str, ...] = ()
    # "opa-envoy": policies get the OPA-Envoy plugin's input and answer in its result shapes.
    input_format: InputFormat = "agentgov"
    revision: str = ""  # the loaded policy set's revision (cache keys, records)
    max_batch: int = DEFAULT_MAX_BATCH  # JSON-RPC messages per MCP request
    tracing: TracingSettings | None = None  # OpenTelemetry traces of decisions (off: None)
