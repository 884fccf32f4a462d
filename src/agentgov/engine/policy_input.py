"""The policy input contract: fill defaults into a partial document and validate it.

Used wherever input arrives as JSON rather than from an `AgentRequest` (test cases, `agentgov
eval`, the Data API), so a typo in a case file is a load error, not a silently different input.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from agentgov.engine.model import summarize_findings


class InputError(ValueError):
    """The document does not satisfy the policy input schema."""


@cache
def input_schema() -> dict[str, Any]:
    text = resources.files("agentgov.engine").joinpath("schema/input.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(input_schema())
    validator: jsonschema.protocols.Validator = cls(input_schema())
    return validator


def normalize_input(partial: Any) -> dict[str, Any]:
    """Return a complete, validated policy input built from `partial` (which is not modified)."""
    if not isinstance(partial, dict):
        raise InputError(f"policy input must be a JSON object, got {type(partial).__name__}")
    doc = copy.deepcopy(partial)
    subject = doc.setdefault("subject", {})
    if isinstance(subject, dict):
        subject.setdefault("id", "anonymous")
        subject.setdefault("roles", [])
        subject.setdefault("tenant", None)
        subject.setdefault("claims", {})
        subject.setdefault("authenticated", False)
    action = doc.setdefault("action", {})
    if isinstance(action, dict):
        action.setdefault("name", "")
    resource = doc.setdefault("resource", {})
    if isinstance(resource, dict):
        resource.setdefault("server", None)
    doc.setdefault("arguments", {})
    pii = doc.setdefault("pii", {})
    if isinstance(pii, dict):
        findings = pii.setdefault("findings", [])
        if isinstance(findings, list):
            for f in findings:
                if isinstance(f, dict):
                    f.setdefault("category", "pii")
            derived = summarize_findings([f for f in findings if isinstance(f, dict)])
            pii.setdefault("types", derived["types"])
            pii.setdefault("secrets", derived["secrets"])
    for key in ("budget", "context", "http"):
        doc.setdefault(key, {})
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"invalid policy input at {where}: {first.message}{more}")
    return doc
