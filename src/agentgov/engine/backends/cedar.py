"""Cedar through cedarpy, with parsed PolicySet/Entities/Schema handles kept between calls.

Cedar skips a policy whose evaluation errors; for a forbid that would be fail-open, so any
evaluation error is a deny here. Annotations carry what Cedar's boolean answer cannot:
`@id` names the reason, `@status("429")` on a forbid sets the deny status, and `@obligation`
policies (see policy.cedar_source) add obligations after an allow.

One `is_authorized` per decision: the obligation policies (permits, by rule) are evaluated in the
same set as the authorization ones, and the answer is read from which policies were satisfied. A
permit among the obligations can never allow: the decision is an allow only when an authorization
permit was satisfied and no forbid was (the forbids are all authorization policies). Asking twice
cost nearly half of a Cedar decision (measured: each call converts the request and the entities).
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import cedarpy
import orjson

from agentgov.engine.backends.base import REASON_DEFAULT_DENY, Explanation, engine_error, is_fatal
from agentgov.engine.backends.cedar_context import context_use
from agentgov.engine.backends.cedar_mapping import build_request, catalog_entities, entities_json
from agentgov.engine.model import (
    STATUS_FORBIDDEN,
    STATUS_OK,
    STATUS_RATE_LIMITED,
    STATUS_UNAUTHENTICATED,
    ApprovalSpec,
    Decision,
    Obligations,
)
from agentgov.engine.policy.cedar_source import CedarPolicies, approval_spec, load_cedar, parse_schema
from agentgov.engine.policy.problems import PolicyLoadError, Problem

DEFAULT_CATALOG_PATH = ("agentgov", "catalog")
# When several forbids apply, the most fundamental one names the status: an unknown caller (401)
# before a forbidden action (403) before a budget that would reset (429).
_STATUS_PRECEDENCE = (STATUS_UNAUTHENTICATED, STATUS_FORBIDDEN, STATUS_RATE_LIMITED)
SLICE_CACHE = 4096  # distinct catalog slices kept parsed (one per resource, as a rule)
VALIDATE_CHUNK = 1000  # catalog entities validated per call at load
PRINCIPAL_CACHE = 4096  # slices with a caller's principal added, for the callers and resources in use
# Cedar names the policy an evaluation error came from: "error while evaluating policy `policy3`: …".
_ERROR_POLICY = re.compile(r"policy `(policy\d+)`")
# An entity literal in Cedar policy text: Type::"id" or Namespace::Type::"id" (the id JSON-escaped).
_LITERAL = re.compile(r'((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)::("(?:[^"\\]|\\.)*")')


def literal_uids(text: str) -> Iterator[tuple[str, str]]:
    """Entity uids written in policy text (over-inclusive is harmless: extra entities change nothing)."""
    for m in _LITERAL.finditer(text):
        try:
            yield m.group(1), json.loads(m.group(2))
        except ValueError:
            continue


def entity_refs(value: Any) -> Iterator[tuple[str, str]]:
    """Entity references in a Cedar JSON value: `{"__entity": {type, id}}`, and `{type, id}` records
    (a schema may read those as references)."""
    if isinstance(value, Mapping):
        ref = value.get("__entity", value if set(value) == {"type", "id"} else None)
        if isinstance(ref, Mapping) and isinstance(ref.get("type"), str) and isinstance(ref.get("id"), str):
            yield ref["type"], ref["id"]
        for child in value.values():
            yield from entity_refs(child)
    elif isinstance(value, list):
        for child in value:
            yield from entity_refs(child)


def _recall(cache: OrderedDict[Any, Any], key: Any) -> Any | None:
    """An LRU cache's entry, marked as most recently used (None when absent)."""
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _keep(cache: OrderedDict[Any, Any], key: Any, limit: int, value: Any) -> Any:
    """`value` stored under `key`, the least recently used entry dropped beyond `limit`."""
    cache[key] = value
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


class CedarBackend:
    name = "cedar"

    def __init__(self, files: list[tuple[str, str]], schema: tuple[str, str] | None = None,
                 data: Mapping[str, Any] | None = None,
                 catalog_path: tuple[str, ...] = DEFAULT_CATALOG_PATH) -> None:
        self.policies: CedarPolicies = load_cedar(files, schema)
        self._schema = parse_schema(*schema) if schema else None
        self._authz = cedarpy.PolicySet.from_str(self.policies.authorization)
        # Display id (@id, else Cedar's policyN) → annotations / source location, for reasons and status.
        self._annotations = {ann.get("id", pid): ann for pid, ann in self.policies.annotations.items()}
        self._locations = {self.policies.annotations[pid].get("id", pid): st
                           for pid, st in self.policies.locations.items()}
        self.applied: Counter[str] = Counter()  # display id → times it applied (policy coverage)
        # Both sets in one: cedarpy numbers policies in text order, so the authorization policies keep
        # their ids (policy0…) and the obligations follow them (policyA…, A the authorization count).
        authorization_count = len(self.policies.authorization_ids)
        self._obligation_of = {f"policy{authorization_count + i}": display
                               for i, display in enumerate(self.policies.obligation_ids.values())}
        both = self.policies.authorization + "\n" + self.policies.obligations
        self._both = cedarpy.PolicySet.from_str(both) if self.policies.obligations else self._authz
        # The context attributes the policies can read; the rest is never converted nor sent.
        self._context_use = context_use(both)
        catalog: Any = data or {}
        for key in catalog_path:
            catalog = catalog.get(key, {}) if isinstance(catalog, Mapping) else {}
        entities = catalog_entities(catalog if isinstance(catalog, Mapping) else {})
        self._catalog: dict[tuple[str, str], dict[str, Any]] = {
            (e["uid"]["type"], e["uid"]["id"]): e for e in entities}
        bad = self._first_invalid(entities)
        if bad is not None:
            where = schema[0] if schema else "data"
            raise PolicyLoadError([Problem(where, 1, 1, f"catalog entities do not match the Cedar schema: {bad}",
                                           "cedar_schema_error")])
        # Entities a policy names literally (Tool::"crm.query") are in every request's slice.
        self._pinned = frozenset(uid for uid in literal_uids(both) if uid in self._catalog)
        self._slices: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._with_principal: OrderedDict[tuple[tuple[str, str], str], Any] = OrderedDict()

    def _first_invalid(self, entities: list[dict[str, Any]]) -> str | None:
        """The whole catalog against the schema, once, at load; None when every entry is valid, else
        the first bad entry and why (a bad entry is a load error).

        In chunks, without the GIL: a reload builds this on a worker thread beside the event loop.
        Held, a 20,000-tool catalog stalled decisions 0.56 s; released but in one piece, freeing the
        parsed set (which holds the GIL) still stalled them 50 ms. Each entity is checked on its own
        (Cedar checks attribute types, and references by type), so chunks answer as the whole does;
        a failing chunk is checked entry by entry, since Cedar's error does not name the entity."""
        for start in range(0, len(entities), VALIDATE_CHUNK):
            chunk = entities[start:start + VALIDATE_CHUNK]
            try:
                cedarpy.Entities.from_json_str(entities_json(chunk), self._schema, release_gil=True)
            except ValueError as exc:
                for entity in chunk:
                    try:
                        cedarpy.Entities.from_json_str(entities_json([entity]), self._schema)
                    except ValueError as one:
                        uid = entity["uid"]
                        return f'{uid["type"]}::{json.dumps(uid["id"])}: {one}'
                return str(exc)
        return None

    def _entities_for(self, resource: tuple[str, str]) -> Any:
        """The catalog entities a request on `resource` can reach, parsed once per resource and kept
        (LRU).

        Cedar evaluation reaches an entity only as the principal, the resource, an entity a policy
        names literally, or an entity reference in the context or in a reached entity's attributes.
        Catalog entities have no parents, and the context holds no references (the caller's
        arguments may not carry Cedar's escapes: `build_request` refuses them). So the resource, the
        literals and what their attributes reference answer exactly as the whole catalog would, and
        a decision costs the same with 20 tools or 20,000 (cloning the whole entity set per request,
        which `with_added_json_str` does, grew with the catalog)."""
        handle = _recall(self._slices, resource)
        if handle is not None:
            return handle
        frontier = [resource, *self._pinned]
        wanted: set[tuple[str, str]] = set()
        while frontier:
            uid = frontier.pop()
            if uid in wanted or uid not in self._catalog:
                continue
            wanted.add(uid)
            frontier.extend(entity_refs(self._catalog[uid]["attrs"]))
        return _keep(self._slices, resource, SLICE_CACHE, cedarpy.Entities.from_json_str(
            entities_json([self._catalog[u] for u in sorted(wanted)]), self._schema))

    def _request_entities(self, resource: tuple[str, str], delta: str) -> Any:
        """The resource's slice plus this caller's principal entity (`delta`, its JSON), kept (LRU):
        an agent makes many calls as the same principal on the same tool or model, and adding the
        principal clones the slice each time (measured ~15 µs of a ~200 µs decision)."""
        key = (resource, delta)
        handle = _recall(self._with_principal, key)
        if handle is not None:
            return handle
        return _keep(self._with_principal, key, PRINCIPAL_CACHE,
                     self._entities_for(resource).with_added_json_str(delta))

    def _authorize(self, policy_input: Mapping[str, Any]) -> tuple[Decision, Any | None]:
        try:
            request, principal = build_request(policy_input, self._context_use)
            delta = [principal]
            res = request["resource"]
            if (res["type"], res["id"]) not in self._catalog:
                delta.append({"uid": res, "attrs": {}, "parents": []})
            entities = self._request_entities((res["type"], res["id"]), entities_json(delta))
            # The context as JSON text (cedarpy's documented alternative to a dict): orjson encodes it
            # in a fraction of the time the wrapper's json.dumps takes, and the wrapper copies nothing.
            request["context"] = orjson.dumps(request["context"]).decode()
            result = cedarpy.is_authorized(request, self._both, entities)
            errors, obligation_errors = self._errors_by_set(result.diagnostics.errors)
            if errors:
                return engine_error(self.name, "; ".join(errors)), result
            satisfied = self._authorization_reasons(result.diagnostics.reasons)
            ids = sorted(self.policies.authorization_ids.get(p, p) for p in satisfied)
            self.applied.update(ids)
            if not result.allowed or not satisfied:  # a forbid applied, or only obligations did: no permit
                return Decision(allow=False, reasons=tuple(ids) or (REASON_DEFAULT_DENY,),
                                status=self._deny_status(satisfied), engine=self.name), result
            if obligation_errors:
                # An obligation we could not evaluate cannot be enforced: refuse rather than allow without it.
                raise RuntimeError("obligation policy error: " + "; ".join(obligation_errors))
            obligations = self._obligations(result.diagnostics.reasons, policy_input)
            return Decision(allow=True, reasons=tuple(ids), status=STATUS_OK,
                            obligations=obligations, engine=self.name), result
        except BaseException as exc:
            if is_fatal(exc):
                raise
            return engine_error(self.name, f"{type(exc).__name__}: {exc}"), None

    def evaluate_sync(self, policy_input: Mapping[str, Any]) -> Decision:
        return self._authorize(policy_input)[0]

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        return self.evaluate_sync(policy_input)

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        decision, result = self._authorize(policy_input)
        lines: list[str] = []
        if result is not None:
            satisfied = self._authorization_reasons(result.diagnostics.reasons)
            for pid in satisfied:
                display = self.policies.authorization_ids.get(pid, pid)
                st = self._locations.get(display)
                where = f" ({st.file}:{st.line})" if st else ""
                lines.append(f"determining policy {display}{where}")
            lines.extend(f"error: {e}" for e in result.diagnostics.errors)
            if not satisfied and not result.diagnostics.errors:
                lines.append("no policy applied: default deny")
        return Explanation(decision, lines)

    def _deny_status(self, policy_ids: list[str]) -> int:
        statuses = set()
        for pid in policy_ids:
            display = self.policies.authorization_ids.get(pid, pid)
            ann = self._annotations.get(display, {})
            raw = ann.get("status", str(STATUS_FORBIDDEN))
            statuses.add(int(raw) if raw.isdigit() else STATUS_FORBIDDEN)
        for status in _STATUS_PRECEDENCE:
            if status in statuses:
                return status
        return min(statuses) if statuses else STATUS_FORBIDDEN

    def _authorization_reasons(self, reasons: list[str]) -> list[str]:
        """The satisfied policies that decide (the obligations among them only add obligations)."""
        return [p for p in reasons if p not in self._obligation_of]

    def _errors_by_set(self, errors: list[str]) -> tuple[list[str], list[str]]:
        """Evaluation errors split into the authorization policies' and the obligations'. An error
        that names no policy counts as an authorization error: a deny, never a skipped forbid."""
        authorization: list[str] = []
        obligations: list[str] = []
        for error in errors:
            named = _ERROR_POLICY.search(error)
            (obligations if named and named[1] in self._obligation_of else authorization).append(error)
        return authorization, obligations

    def _obligations(self, satisfied: list[str], policy_input: Mapping[str, Any]) -> Obligations:
        redact: set[str] = set()
        headers: dict[str, str] = {}
        approval: ApprovalSpec | None = None
        for pid in satisfied:
            display = self._obligation_of.get(pid)
            if display is None:
                continue  # an authorization permit
            self.applied[display] += 1
            ann = self._annotations[display]
            value = ann["obligation"]
            if value == "redact":
                redact.update(policy_input.get("pii", {}).get("types", []))
            elif value == "approval":
                approval = approval or approval_spec(ann)  # checked when the policy was loaded
            else:
                name, _, header_value = value.removeprefix("header:").partition("=")
                headers[name.strip().lower()] = header_value.strip()
        return Obligations(redact=tuple(sorted(redact)), headers=headers, approval=approval)

    def policy_ids(self) -> list[str]:
        return list(self._annotations)

    async def close(self) -> None:
        return None
