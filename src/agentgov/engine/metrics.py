"""Prometheus metrics, served on each worker's metrics port.

Here rather than in server/ because the Governor times its own stages; adapters count decisions
and time whole calls, labelled by the API that answered.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from agentgov.engine.errors import category_of
from agentgov.engine.model import Decision

_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

DECISIONS = Counter("agentgov_decisions_total", "Decisions by API, outcome and first reason",
                    ["api", "outcome", "reason"])
LATENCY = Histogram("agentgov_request_seconds", "Time to answer one call, by API", ["api"], buckets=_BUCKETS)
STAGE_LATENCY = Histogram("agentgov_stage_seconds", "Time spent in each stage of a decision", ["stage"],
                          buckets=_BUCKETS)
TOKENS = Counter("agentgov_llm_tokens_total", "LLM tokens used, metered from responses by ext_proc",
                 ["tenant", "model", "direction"])
HOOK_FAILURES = Counter("agentgov_hook_failures_total",
                        "Hooks that raised or timed out, by what their failure mode made of it",
                        ["hook", "phase", "outcome"])
RESPONSES = Counter("agentgov_responses_total", "Responses inspected by ext_proc, by what happened to them",
                    ["outcome", "reason"])
UNMETERED = Counter("agentgov_llm_unmetered_total", "LLM responses whose token usage could not be read",
                    ["tenant"])


_DECISION_COUNTERS: dict[tuple[str, str, str], Any] = {}
_MAX_CACHED_COUNTERS = 4096  # reasons come from policies: keep the cache bounded whatever they say


def count_decision(api: str, decision: Decision) -> tuple[str, str]:
    """Count one decision; returns its (outcome, first reason) labels for the caller's log line.
    The labelled child is cached: prometheus_client's label lookup costs more than the increment."""
    outcome = "allow" if decision.allow else category_of(decision.status).answer.outcome
    reason = decision.reasons[0] if decision.reasons else ""
    key = (api, outcome, reason)
    counter = _DECISION_COUNTERS.get(key)
    if counter is None:
        counter = DECISIONS.labels(api=api, outcome=outcome, reason=reason)
        if len(_DECISION_COUNTERS) < _MAX_CACHED_COUNTERS:
            _DECISION_COUNTERS[key] = counter
    counter.inc()
    return outcome, reason
