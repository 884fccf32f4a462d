"""Real OPA as a test oracle: OPA 1.20 embedded in-process by PyPI `opa-golib-python-bindings`.

Not a runtime dependency (alpha, one maintainer; it declares Python >= 3.14 but works on 3.11, so
`make` installs it with --ignore-requires-python). Calls are serialised inside it; it is not
fork-safe, which is fine here (tests spawn, never fork, Python children).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentgov.engine.backends.base import Explanation, decision_from_document
from agentgov.engine.model import Decision

try:
    from opa_bindings import OpaEngine, OpaError, OpaUndefinedError
except ImportError as exc:  # pragma: no cover - a setup problem, reported as such
    raise ImportError("opa-golib-python-bindings is not installed: `make test` installs it "
                      "(pip install --ignore-requires-python opa-golib-python-bindings==0.4.4)") from exc

__all__ = ["OpaEngine", "OpaError", "OpaUndefinedError", "RealOpaBackend", "real_opa"]


def real_opa(modules: list[tuple[str, str]], data: Mapping[str, Any]) -> OpaEngine:
    """An OPA engine with the modules and data loaded; compile errors surface on first evaluation."""
    engine = OpaEngine()
    for file, source in modules:
        engine.add_policy(file, source)
    if data:
        engine.add_data(dict(data))
    return engine


class RealOpaBackend:
    """The DecisionBackend shape over real OPA, so the case runner can drive it like regorus."""

    name = "rego"

    def __init__(self, modules: list[tuple[str, str]], data: Mapping[str, Any], rule: str = "data.agentgov.decision"):
        self.engine = real_opa(modules, data)
        self.path = rule.removeprefix("data.").replace(".", "/")

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            result = self.engine.eval_document(self.path.replace("/", "."), input=dict(policy_input))
        except OpaUndefinedError:
            result = None
        return decision_from_document(result, engine="opa")

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        return Explanation(await self.evaluate(policy_input))

    async def close(self) -> None:
        self.engine.close()
