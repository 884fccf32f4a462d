"""The one error table: every way a decision can fail, and what each door answers for it.

Stages and hooks name a failure by its category (`Decision.failed(Failure.MALFORMED, ...)`,
`Deny(..., failure=Failure.OVER_BUDGET)`), never by a
status number; the doors in `server/` render a failed decision in their own protocol's shape from
this table alone. Adding a category means adding one row here, and `tests/test_errors.py` then
drives it through every door.

What each column means (`category` names the row):
- `status`: the HTTP status of the deny (Envoy's answer to the client, ext_proc's immediate
  response, the decision service's and AuthZEN's `status`). A policy may still choose any
  status for its own denies (the result contract's `status`); this table covers agentgov's own.
- `error`: the `error` field of the JSON body every HTTP-shaped door sends.
- `grpc_check`: the gRPC code inside an ext_authz `CheckResponse.status` (Envoy reads only OK
  vs not OK; 401 is told apart so access logs show it).
- `outcome`: the `outcome` label of `agentgov_decisions_total`.
- `door_status`: the HTTP status a JSON door (the Data API, AuthZEN) gives when the failure
  happens before a decision exists (its request could not be read, or the door itself failed):
  those doors answer decisions with 200 and a result, but a failure of the door with an error.
- `grpc_door`: likewise for the decision service (a gRPC status, since no answer was decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Answer:
    category: str  # also keeps rows with the same answers distinct members of the enum
    status: int
    error: str
    grpc_check: str
    outcome: str
    door_status: int
    grpc_door: str


_DENIED = "PERMISSION_DENIED"


class Failure(Enum):
    """Categories of failure, each with its row of the table. Columns: category, status, error,
    grpc_check, outcome, door_status, grpc_door."""

    MALFORMED = Answer("malformed", 400, "bad_request", _DENIED, "deny", 400, "INVALID_ARGUMENT")
    TOO_LARGE = Answer("too_large", 413, "payload_too_large", _DENIED, "deny", 413, "INVALID_ARGUMENT")
    UNSUPPORTED_MEDIA = Answer("unsupported_media", 415, "unsupported_media_type", _DENIED, "deny", 415, "INVALID_ARGUMENT")
    UNAUTHENTICATED = Answer("unauthenticated", 401, "unauthenticated", "UNAUTHENTICATED", "deny", 401, "UNAUTHENTICATED")
    FORBIDDEN = Answer("forbidden", 403, "forbidden", _DENIED, "deny", 403, _DENIED)
    OVER_BUDGET = Answer("over_budget", 429, "rate_limited", _DENIED, "deny", 429, "RESOURCE_EXHAUSTED")
    HOOK_ERROR = Answer("hook_error", 503, "unavailable", _DENIED, "error", 500, "INTERNAL")
    ENGINE_ERROR = Answer("engine_error", 503, "unavailable", _DENIED, "error", 500, "INTERNAL")
    UNAVAILABLE = Answer("unavailable", 503, "unavailable", _DENIED, "error", 503, "UNAVAILABLE")
    INTERNAL = Answer("internal", 503, "unavailable", _DENIED, "error", 500, "INTERNAL")
    # Envoy stopped waiting and answered 503 itself: whatever was decided, nothing was allowed.
    LATE = Answer("late", 503, "unavailable", "DEADLINE_EXCEEDED", "late", 504, "DEADLINE_EXCEEDED")

    @property
    def answer(self) -> Answer:
        answer: Answer = self.value
        return answer

    @property
    def status(self) -> int:
        return self.answer.status


# Reasons agentgov itself gives for the fail-closed categories: a door that catches an exception
# uses these, so a dashboard can tell them apart.
REASON_INTERNAL = "internal_error"
REASON_HOOK = "hook_error"
REASON_UNAVAILABLE = "decision_service_unavailable"

OK_STATUS = 200
_BY_STATUS: dict[int, Failure] = {}
for _failure in Failure:
    _BY_STATUS.setdefault(_failure.status, _failure)


def category_of(status: int) -> Failure:
    """The category a deny's status falls in (a policy's own status included): 4xx statuses the
    table does not know are forbidden-like, 5xx unavailable-like."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return Failure.UNAVAILABLE if status >= 500 else Failure.FORBIDDEN


def error_code(status: int) -> str:
    """The `error` field of the JSON body for a deny with this status."""
    known = _BY_STATUS.get(status)
    return known.answer.error if known is not None else "denied"
