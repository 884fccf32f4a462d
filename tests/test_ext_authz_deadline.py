"""A Check that finishes after Envoy's deadline is not counted as an allow: Envoy already answered 503."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2 as authz
from prometheus_client import REGISTRY

from agentgov.engine.config import build_governor, load_config
from agentgov.engine.server.ext_authz import AuthorizationService
from tests.conftest import POLICIES


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def _count(outcome: str, reason: str) -> float:
    return REGISTRY.get_sample_value("agentgov_decisions_total",
                                     {"api": "ext_authz", "outcome": outcome, "reason": reason}) or 0.0


def test_late_checks_are_counted_as_late_not_as_their_decision(tmp_path: Path) -> None:
    config = tmp_path / "agentgov.yaml"
    config.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False}}))
    service = AuthorizationService(build_governor(load_config(config)))
    check = authz.CheckRequest()
    check.attributes.request.http.method = "GET"
    check.attributes.request.http.path = "/health"
    late_before, deny_before = _count("late", "deadline_exceeded"), _count("deny", "unauthenticated")
    asyncio.run(service.Check(check, _Context(-0.01)))
    assert _count("late", "deadline_exceeded") == late_before + 1
    assert _count("deny", "unauthenticated") == deny_before
    asyncio.run(service.Check(check, _Context(0.4)))
    assert _count("deny", "unauthenticated") == deny_before + 1
