"""The `pii` hook: find PII and secrets in what agents send and receive.

- before: scans every text the parsed request carries (prompts, tool arguments, resource URIs,
  prompt arguments) and hands the policy `input.pii.findings` (type, count, path, category; never
  the values).
- rewrite: carries out the policy's `redact` obligation on the request body in ext_proc.
- response: scans tool results and model output (JSON, or SSE as it streams) and asks the same
  policy whether to pass, redact or block them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgov.engine.errors import Failure
from agentgov.engine.hooks.base import (
    BodyVerdict,
    Deny,
    Enrichment,
    HookRequest,
    PolicyQuestion,
    ResponseContext,
)
from agentgov.engine.hooks.pii.detectors import ALL_TYPES, CATEGORY_OF, DetectContext
from agentgov.engine.hooks.pii.jsonscan import redact_document, scan_document
from agentgov.engine.hooks.pii.scanner import Scanner, ScanSettings
from agentgov.engine.hooks.pii.stream import SseInspector, StreamAction
from agentgov.engine.keys import unknown_keys
from agentgov.engine.model import Decision, Finding
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json

log = logging.getLogger("agentgov.pii")
DEFAULT_TEMPLATE = "[REDACTED:{type}]"
# Bodies larger than this are not inspected; the answer is blocked instead (fail closed).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_KEYS = {"enabled", "types", "disabled_types", "min_confidence", "allow", "allow_patterns", "default_region",
         "secret_min_entropy", "redaction", "inspect_responses", "stream_holdback_chars", "max_scan_chars", "secrets"}


ENFORCERS = ("hook", "policy")


class PiiConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PiiSettings:
    scan: ScanSettings = field(default_factory=ScanSettings)
    template: str = DEFAULT_TEMPLATE
    inspect_responses: bool = True
    holdback: int = 256
    max_scan_chars: int = 4_000_000
    # "hook": a secret in a request is a 403 secret_detected whatever the policy says (a guarantee);
    # "policy": the policy decides from input.pii.secrets (the shipped library refuses them too).
    secrets: str = "hook"


def settings_from_config(doc: Mapping[str, Any]) -> PiiSettings:
    """The `pii:` section of agentgov.yaml, checked strictly: a typo in a type name is an error."""
    problem = unknown_keys(doc, _KEYS, "pii.")
    if problem:
        raise PiiConfigError(problem)
    types = set(_type_list(doc.get("types", list(ALL_TYPES)), "pii.types"))
    types -= set(_type_list(doc.get("disabled_types", []), "pii.disabled_types"))
    confidence = doc.get("min_confidence", {})
    if not isinstance(confidence, dict):
        raise PiiConfigError("pii.min_confidence must map type names (or `default`) to numbers")
    floors: dict[str, float] = {}
    default = 0.5
    for key, value in confidence.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise PiiConfigError(f"pii.min_confidence.{key} must be a number from 0 to 1")
        if key == "default":
            default = float(value)
        else:
            _type_list([key], "pii.min_confidence")
            floors[key] = float(value)
    patterns = []
    for i, p in enumerate(_str_list(doc.get("allow_patterns", []), "pii.allow_patterns")):
        try:
            patterns.append(re.compile(p))
        except re.error as exc:
            raise PiiConfigError(f"pii.allow_patterns[{i}] is not a valid regular expression: {exc}") from None
    region = doc.get("default_region", "US")
    if not isinstance(region, str) or not re.fullmatch(r"[A-Z]{2}", region):
        raise PiiConfigError("pii.default_region must be a two-letter region code such as US or GB")
    entropy = doc.get("secret_min_entropy", 3.0)
    if isinstance(entropy, bool) or not isinstance(entropy, int | float) or entropy < 0:
        raise PiiConfigError("pii.secret_min_entropy must be a non-negative number (bits per character)")
    template = doc.get("redaction", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or "{" in template.replace("{type}", ""):
        raise PiiConfigError("pii.redaction must be a string; `{type}` is replaced by the finding's type")
    holdback = _positive_int(doc, "stream_holdback_chars", 256)
    max_chars = _positive_int(doc, "max_scan_chars", 4_000_000)
    inspect = doc.get("inspect_responses", True)
    if not isinstance(inspect, bool):
        raise PiiConfigError("pii.inspect_responses must be true or false")
    secrets = doc.get("secrets", "hook")
    if secrets not in ENFORCERS:
        raise PiiConfigError("pii.secrets must be hook (refuse secrets whatever the policy says) or policy")
    scan = ScanSettings(types=frozenset(types), min_confidence=floors, default_confidence=default,
                        allow_values=frozenset(_str_list(doc.get("allow", []), "pii.allow")),
                        allow_patterns=tuple(patterns),
                        context=DetectContext(default_region=region, secret_min_entropy=float(entropy)))
    return PiiSettings(scan=scan, template=template, inspect_responses=inspect, holdback=holdback,
                       max_scan_chars=max_chars, secrets=str(secrets))


def _type_list(value: Any, where: str) -> list[str]:
    names = _str_list(value, where)
    bad = [n for n in names if n not in ALL_TYPES]
    if bad:
        raise PiiConfigError(f"{where}: unknown type(s) {', '.join(bad)} (known: {', '.join(ALL_TYPES)})")
    return names


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PiiConfigError(f"{where} must be a list of strings")
    return list(value)


def _positive_int(doc: Mapping[str, Any], key: str, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PiiConfigError(f"pii.{key} must be a positive integer")
    return value


class PiiHook:
    name = "pii"
    phases = frozenset({"before", "rewrite", "response"})
    failure_mode = "deny"
    timeout_s: float | None = None  # synchronous and bounded by max_scan_chars

    def __init__(self, settings: PiiSettings | None = None) -> None:
        self.settings = settings or PiiSettings()
        self.scanner = Scanner(self.settings.scan)

    # --- before: findings for the policy ---------------------------------------------------------

    async def before(self, request: HookRequest) -> Enrichment | Deny | None:
        total = sum(len(text) for action in request.actions for _, text in action.texts)
        if total > self.settings.max_scan_chars:
            return Deny("scan_limit_exceeded", status=413,
                        detail="the request carries more text than agentgov inspects")
        per_action: list[list[Finding]] = []
        for action in request.actions:
            per_action.append(self.findings(action.texts))
        if not any(per_action):
            return None
        return Enrichment(findings=per_action, enforce=self._secret_guarantee(per_action))

    def _secret_guarantee(self, per_action: Sequence[Sequence[Finding]]) -> Deny | None:
        """With `pii.secrets: hook`, a credential in a request is refused whatever the policy says."""
        if self.settings.secrets != "hook":
            return None
        kinds = sorted({f.type for found in per_action for f in found if f.category == "secret"})
        if not kinds:
            return None
        return Deny.failed(Failure.FORBIDDEN, "secret_detected",
                           detail=f"the request carries a credential ({', '.join(kinds)}); remove it and retry")

    def findings(self, texts: Sequence[tuple[str, str]]) -> list[Finding]:
        counts: dict[tuple[str, str], int] = {}
        for path, text in texts:
            for span in self.scanner.scan(text):
                counts[(span.type, path)] = counts.get((span.type, path), 0) + 1
        return [Finding(type=t, count=n, path=p, category=CATEGORY_OF[t]) for (t, p), n in counts.items()]

    # --- rewrite: the redact obligation, on the request body --------------------------------------

    def rewrite(self, body: bytes, redact: Sequence[str]) -> bytes | None:
        """The body with findings of `redact` replaced in its JSON string values; None if nothing
        changed. Raises ProtocolError for a body that is not the JSON ext_authz already accepted."""
        doc = decode_json(body)
        redacted, count = redact_document(doc, self.scanner, redact, self.settings.template)
        if not count:
            return None
        return json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    # --- response: tool results and model output ------------------------------------------------

    def response(self, context: ResponseContext) -> ResponseInspection | None:
        if not self.settings.inspect_responses or not context.actions:
            return None
        return ResponseInspection(self, context)


class ResponseInspection:
    """One response: buffered JSON is judged whole; an event stream is judged as it flows."""

    def __init__(self, hook: PiiHook, context: ResponseContext) -> None:
        self._hook = hook
        self._context = context
        self._streaming = False
        self._buffer = bytearray()
        self._stream: SseInspector | None = None
        self._asked: dict[frozenset[str], StreamAction] = {}
        self._mcp = any(a.protocol == "mcp" for a in context.actions)
        self.redacted: set[str] = set()  # the types the policy had redacted in this response (for the record)

    def on_headers(self, status: int, headers: Mapping[str, str]) -> bool:
        content_type = headers.get("content-type", "").lower()
        if not 200 <= status < 300:
            return False
        self._streaming = "text/event-stream" in content_type
        if self._streaming:
            self._stream = SseInspector(self._hook.scanner, self._decide, holdback=self._hook.settings.holdback,
                                        template=self._hook.settings.template, blocked_event=self._blocked_event)
            return True
        return "json" in content_type or content_type.startswith("text/")

    @property
    def wants_buffering(self) -> bool:
        return not self._streaming

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> BodyVerdict:
        if self._stream is not None:
            out = await self._stream.feed(chunk)
            if self._stream.blocked is not None:
                return BodyVerdict(replace=out, block=True, reason=_first(self._stream.blocked.reasons))
            if end_of_stream:
                out += await self._stream.finish()
                if self._stream.blocked is not None:
                    return BodyVerdict(replace=out, block=True, reason=_first(self._stream.blocked.reasons))
            return BodyVerdict(replace=out)
        self._buffer += chunk
        if len(self._buffer) > MAX_RESPONSE_BYTES:
            return self._block(StreamAction(block=True, reasons=("response_too_large",)))
        if not end_of_stream:
            return BodyVerdict(replace=b"")
        return await self._judge_whole(bytes(self._buffer))

    async def _judge_whole(self, body: bytes) -> BodyVerdict:
        try:
            doc: Any = decode_json(body)
        except ProtocolError:
            try:
                doc = body.decode("utf-8")
            except UnicodeDecodeError:
                return self._block(StreamAction(block=True, reasons=("response_not_inspectable",)))
        found = scan_document(self._hook.scanner, doc)
        if not found:
            return BodyVerdict(replace=body)
        counts: dict[str, int] = {}
        for _, spans in found:
            for s in spans:
                counts[s.type] = counts.get(s.type, 0) + 1
        action = await self._decide(counts)
        if action.block:
            return self._block(action, doc)
        if not action.redact:
            return BodyVerdict(replace=body)
        redacted, _ = redact_document(doc, self._hook.scanner, action.redact, self._hook.settings.template)
        if isinstance(redacted, str):
            return BodyVerdict(replace=redacted.encode("utf-8"))
        return BodyVerdict(replace=json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    async def _decide(self, counts: dict[str, int]) -> StreamAction:
        """Ask the policy, once per set of finding types, as the request's actions."""
        key = frozenset(counts)
        if key in self._asked:
            return self._asked[key]
        findings = [Finding(type=t, count=n, path="response", category=CATEGORY_OF[t]) for t, n in counts.items()]
        redact: set[str] = set()
        for action in self._context.actions:
            decision: Decision = await self._context.ask(PolicyQuestion("response", action, findings))
            if not decision.allow:
                answer = StreamAction(block=True, reasons=decision.reasons or ("denied",))
                self._asked[key] = answer
                return answer
            redact.update(decision.obligations.redact)
        answer = StreamAction(redact=frozenset(redact))
        self._asked[key] = answer
        self.redacted |= answer.redact & key
        return answer

    def _error_doc(self, action: StreamAction) -> dict[str, Any]:
        return {"error": "forbidden", "reasons": list(action.reasons), "decision_id": self._context.decision_id,
                "detail": "the response was withheld by policy"}

    def _blocked_event(self, action: StreamAction) -> bytes:
        payload = json.dumps({"type": "error", "error": {"type": "agentgov_blocked", **self._error_doc(action)}})
        return f"event: error\ndata: {payload}\n\n".encode()

    def _block(self, action: StreamAction, doc: Any = None) -> BodyVerdict:
        reason = _first(action.reasons)
        if self._mcp:
            # MCP clients expect JSON-RPC: the result becomes an error for the same request id.
            rpc_id = doc.get("id") if isinstance(doc, dict) else None
            body = {"jsonrpc": "2.0", "id": rpc_id, "error": {
                "code": -32001, "message": "response withheld by agentgov policy", "data": self._error_doc(action)}}
            return BodyVerdict(block=True, block_status=200, block_body=json.dumps(body).encode(), reason=reason)
        return BodyVerdict(block=True, block_status=403, block_body=json.dumps(self._error_doc(action)).encode(),
                           reason=reason)


def _first(reasons: Sequence[str]) -> str:
    return reasons[0] if reasons else "denied"
