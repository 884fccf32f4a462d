"""Which parts of the Cedar context a policy set can read, and the context cut down to them.

Cedar reads a record's attributes only by name written in the policy (`context.arguments.tenant_id`,
`context has budget`): there is no computed attribute access. So the attribute paths under
`context` that the policies name, read from Cedar's own parse tree (cedarpy's PST), are all the
evaluation can reach. A path used as a value (compared, passed to a method, `context` itself in a
record) keeps its whole subtree; a `has` keeps the attribute it asks about. Everything else is left
out of the request: Cedar parses the context on every call without a schema, and for a tool call
with kilobytes of arguments that parse (and our conversion before it) was most of a decision's
cost, for attributes no policy looks at. A policy set whose tree cannot be read (syntax newer than
cedarpy's PST models) keeps the whole context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeAlias

import cedarpy
from cedarpy import pst

# A projection: True keeps the whole value; a mapping keeps those attributes, each by its own projection.
Projection: TypeAlias = "bool | dict[str, Projection]"
WHOLE: Projection = True


def context_use(policy_text: str) -> Projection:
    """The projection of `context` that evaluating `policy_text` can read (WHOLE when unknown)."""
    try:
        tree = cedarpy.policies_to_pst(policy_text)
    except (ValueError, TypeError):
        return WHOLE
    use: dict[str, Projection] = {}
    if _visit(tree, use):
        return WHOLE
    return use


def project(value: Any, projection: Projection) -> Any:
    """`value` cut down to `projection`: attributes it lacks stay absent (so `has` still answers
    false), and a non-record where attributes are named stays whole (so Cedar's error is the same)."""
    if not isinstance(projection, dict) or not (type(value) is dict or isinstance(value, Mapping)):
        return value
    return {key: project(value[key], sub) for key, sub in projection.items() if key in value}


def _context_path(node: Any) -> tuple[str, ...] | None:
    """The attribute path when `node` is `context` or `context.a.b…`, else None."""
    path: list[str] = []
    while isinstance(node, pst.GetAttr):
        path.append(node.attr)
        node = node.base
    if isinstance(node, pst.Var) and node.name == "context":
        return tuple(reversed(path))
    return None


def _mark(use: dict[str, Projection], path: tuple[str, ...]) -> bool:
    """Keep `path` whole; True when that is the whole context."""
    if not path:
        return True
    level = use
    for name in path[:-1]:
        sub = level.get(name)
        if sub is True:
            return False  # an ancestor is already kept whole
        if sub is None:
            sub = level[name] = {}
        assert isinstance(sub, dict)
        level = sub
    level[path[-1]] = True
    return False


def _visit(node: Any, use: dict[str, Projection]) -> bool:
    """Record every context path under `node`; True as soon as the whole context is needed."""
    path = _context_path(node)
    if path is not None:
        return _mark(use, path)
    if isinstance(node, pst.HasAttr):
        base = _context_path(node.base)
        if base is not None:
            return _mark(use, base + tuple(node.attrs))
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return any(_visit(getattr(node, f.name), use) for f in dataclasses.fields(node))
    if isinstance(node, Mapping):
        return any(_visit(child, use) for child in node.values())
    if isinstance(node, list | tuple):
        return any(_visit(child, use) for child in node)
    return False
