"""Example agentgov hooks. Each entry point names a factory called with the hook's `options`.

A hook needs only `name`, `phases`, `failure_mode`, `timeout_s` and an `async def before/after`;
the types it receives and returns come from `agentgov.engine.hooks.base`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentgov.engine.hooks.base import Enrichment, HookRequest
from agentgov.engine.model import Decision


class TenantTier:
    """Adds the caller's tenant tier to the policy input (`input.hooks.tenant_tier.tier`)."""

    name = "tenant_tier"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.tiers = dict(options.get("tiers", {}))

    async def before(self, request: HookRequest) -> Enrichment:
        return Enrichment(data={"tier": self.tiers.get(request.subject.tenant or "", "standard")})


class TierEcho:
    """Reads what tenant_tier added: it can only see it if it runs after it."""

    name = "tier_echo"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    async def before(self, request: HookRequest) -> Enrichment:
        tier = request.extensions.get("tenant_tier", {}).get("tier", "unseen")
        return Enrichment(data={"saw": tier})


class Flaky:
    name = "flaky"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    async def before(self, request: HookRequest) -> None:
        raise RuntimeError(f"upstream lookup failed for {request.subject.id}")


class Slow:
    name = "slow"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.seconds = float(options.get("seconds", 5))

    async def before(self, request: HookRequest) -> None:
        await asyncio.sleep(self.seconds)


class Recorder:
    """Appends every decision it sees (after phase) to a JSON-lines file."""

    name = "recorder"
    phases = frozenset({"after"})
    failure_mode = "deny"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.path = Path(str(options["path"]))

    async def after(self, request: HookRequest, decision: Decision) -> None:
        line = {"decision_id": request.decision_id, "entry_point": request.entry_point, "allow": decision.allow,
                "reasons": list(decision.reasons)}
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


class Broken:
    """Declares a phase it does not implement: agentgov refuses to start with it."""

    name = "broken"
    phases = frozenset({"before"})
    failure_mode = "sometimes"
    timeout_s = 0.5

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass


class Misnamed(TenantTier):
    name = "not_misnamed"
