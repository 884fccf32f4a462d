"""One loaded policy set: the backend that decides, and the identity decisions and records carry.

A reload builds a whole new `PolicySet` off to the side and swaps it in as one reference, so a
check that started on one set finishes on it: the runner reads the reference once per decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from agentgov.engine.backends.base import DecisionBackend, Explanation, ResultReader, decision_from_document
from agentgov.engine.backends.rego import DEFAULT_RULE, RegoBackend, RegoPrepared, prepare_rego
from agentgov.engine.model import STATUS_ERROR, Decision
from agentgov.engine.policy.library import build_backends
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.policy.sources import PolicySources

REASON_POLICY_UNAVAILABLE = "policy_unavailable"
NO_POLICIES = "no_policies"  # the Problem code when a source has none for the configured engine


@dataclass(frozen=True)
class PolicySet:
    backend: DecisionBackend
    revision: str = ""  # the bundle manifest's revision ("" for plain folders)
    digest: str = ""    # sha256 of the bundle archive, or of the loaded sources for plain folders
    source: str = ""    # where it came from, for logs and health
    blob: bytes | None = field(default=None, repr=False)  # the bundle bytes, when served to OPA agents
    data: Mapping[str, Any] | None = field(default=None, repr=False)  # its data document (None: remote)

    @property
    def label(self) -> str:
        """`<revision>@sha256:<12 hex>`: what every decision and audit record names."""
        short = f"sha256:{self.digest[:12]}" if self.digest else ""
        if self.revision and short:
            return f"{self.revision}@{short}"
        return self.revision or short

    @property
    def available(self) -> bool:
        return not isinstance(self.backend, UnavailableBackend)


def sources_digest(sources: PolicySources) -> str:
    """A digest of what was loaded (policies, schema, data), so folder-loaded sets have a stable
    identity across workers and restarts, like a bundle's."""
    doc = {"rego": sorted(sources.rego), "cedar": sorted(sources.cedar),
           "schema": list(sources.cedar_schema or ()), "data": sources.data}
    try:  # orjson: one call that holds the GIL, on a reload's thread beside the event loop (the
        # standard encoder held it ~80 ms with a 20,000-tool catalog)
        text = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, non-string keys
        text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text).hexdigest()


def _no_policies(engine: str, source: str) -> PolicyLoadError:
    return PolicyLoadError([Problem(source, 0, 0, f"no {engine} policies in it", NO_POLICIES)])


PolicySetBuilder = Callable[[PolicySources, str, str, "bytes | None", str], PolicySet]


def policy_set_builder(engine: str, *, rule: str = DEFAULT_RULE,
                       reader: ResultReader = decision_from_document) -> PolicySetBuilder:
    """A function from loaded sources (with their revision, digest, bundle bytes and origin) to a
    ready PolicySet for `engine`: the one way `serve`, a reload and a shadow candidate load policies."""

    def build(sources: PolicySources, revision: str, digest: str, blob: bytes | None, source: str) -> PolicySet:
        # Only the configured engine is built (a bundle may carry both; compiling both doubles a reload).
        wanted = replace(sources, cedar=[] if engine != "cedar" else sources.cedar,
                         rego=[] if engine != "rego" else sources.rego)
        backends = build_backends(wanted, rule=rule, reader=reader)
        if engine not in backends:
            raise _no_policies(engine, source)
        return PolicySet(backends[engine], revision, digest or sources_digest(sources), source, blob, sources.data)

    return build


ReloadBuilder = Callable[[PolicySources, str, str, "bytes | None", str], Awaitable[PolicySet]]


def reload_builder(engine: str, *, rule: str = DEFAULT_RULE,
                   reader: ResultReader = decision_from_document) -> ReloadBuilder:
    """`policy_set_builder`'s result, built while the same thread keeps deciding: a reload must
    not hold decisions up (measured with a 20,000-tool catalog: building on the event loop stalled
    it ~210 ms for Rego; Cedar's build on a thread held the GIL 0.56 s until it released it).

    Cedar's handles may move between threads: the whole build runs on a worker thread. regorus'
    objects belong to the thread that made them: what can move is done on a worker thread (checks,
    the data's JSON, compiling in a child process), and the engines are assembled here in steps
    that give the loop back between them (RegoBackend.assemble)."""
    build = policy_set_builder(engine, rule=rule, reader=reader)

    async def build_while_serving(sources: PolicySources, revision: str, digest: str, blob: bytes | None,
                                  source: str) -> PolicySet:
        if engine != "rego":
            return await asyncio.to_thread(build, sources, revision, digest, blob, source)
        if not sources.rego:
            raise _no_policies(engine, source)
        prepared, digest = await asyncio.to_thread(_prepare, sources, digest, rule)
        backend = await RegoBackend.assemble(prepared, rule, reader)
        return PolicySet(backend, revision, digest, source, blob, sources.data)

    return build_while_serving


def _prepare(sources: PolicySources, digest: str, rule: str) -> tuple[RegoPrepared, str]:
    """The thread's part of a Rego reload, with the folder digest (a sorted dump of all the data:
    90 ms of GIL with a 20,000-tool catalog) when the source gave none."""
    return prepare_rego(sources.rego, sources.data, rule), digest or sources_digest(sources)


class UnavailableBackend:
    """What decides while no policy set could be loaded (the bundle source is down at start-up and
    nothing was persisted): every check is refused with 503, nothing is allowed."""

    name = "unavailable"

    def __init__(self, why: str) -> None:
        self.why = why

    async def evaluate(self, policy_input: Any) -> Decision:
        return Decision.deny(REASON_POLICY_UNAVAILABLE, status=STATUS_ERROR, error=self.why,
                             detail="no policy is loaded yet")

    async def explain(self, policy_input: Any) -> Explanation:
        return Explanation(await self.evaluate(policy_input), [self.why])

    async def close(self) -> None:
        return None
