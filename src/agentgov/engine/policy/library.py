"""Turn discovered policy sources into ready decision backends, one per engine that has policies."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from agentgov.engine.backends.base import DecisionBackend, ResultReader, decision_from_document
from agentgov.engine.backends.rego import DEFAULT_RULE, RegoBackend
from agentgov.engine.gc_pause import gc_paused
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.policy.rego_check import check_modules
from agentgov.engine.policy.sources import PolicySources

ENGINES = ("rego", "cedar")


def shipped_library() -> Path:
    """Where the shipped policy library is: `policies/` in a checkout, `agentgov/library` in a wheel."""
    return Path(str(resources.files("agentgov.library")))


def default_policy_path() -> Path:
    """`./policies` when the current folder has one (a project, or this repository), else the shipped library."""
    local = Path("policies")
    return local if local.is_dir() else shipped_library()


def check_sources(sources: PolicySources) -> list[Problem]:
    """Everything `agentgov check` verifies; an empty list means every engine would load."""
    with gc_paused():  # a large catalog's entities are many objects alive until the end
        problems = check_modules(sources.rego + sources.rego_tests, sources.data)
        if sources.cedar or sources.cedar_schema:
            from agentgov.engine.backends.cedar import CedarBackend  # cedarpy: only where there is Cedar

            try:
                CedarBackend(sources.cedar, sources.cedar_schema, sources.data)
            except PolicyLoadError as exc:
                problems.extend(exc.problems)
    return problems


def build_backends(sources: PolicySources, *, rule: str = DEFAULT_RULE,
                   data: Mapping[str, Any] | None = None,
                   reader: ResultReader = decision_from_document) -> dict[str, DecisionBackend]:
    """Backends for every engine with policies. `data` replaces the discovered data when given.

    `reader` applies to Rego only: Cedar answers permit/forbid, never a result document.
    """
    effective = sources.data if data is None else data
    backends: dict[str, DecisionBackend] = {}
    with gc_paused():  # a large catalog's entities are many objects alive until the end
        if sources.rego:
            backends["rego"] = RegoBackend(sources.rego, effective, rule, reader)
        if sources.cedar:
            from agentgov.engine.backends.cedar import CedarBackend  # cedarpy (~2.4 MB): only where there is Cedar

            backends["cedar"] = CedarBackend(sources.cedar, sources.cedar_schema, effective)
    return backends
