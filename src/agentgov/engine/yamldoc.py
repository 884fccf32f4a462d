"""YAML data documents (policy data, bundle data, catalogs): exactly `yaml.safe_load`, faster.

Read with libyaml's C loader when PyYAML has it (the pure Python loader took 8.9 s on a 20,000-tool
catalog, the C loader 3.6 s; docs/benchmarks.md). Even the C loader makes a node and two marks per
scalar, all alive until the end (the cyclic collector kept re-scanning them: it is paused during a
load, see gc_pause), resolves every scalar's tag in Python and builds every value in Python, one
generator-driven call per node. Two things here are hand-written for that hot path, each falling
back to PyYAML's own code wherever its meaning could differ:

- the implicit tag of a plain scalar depends only on its text, so it is remembered per load (a
  catalog repeats `classification`, `roles`, `internal` thousands of times);
- a document made only of plain mappings, sequences and the standard scalar tags is built by one
  direct recursion. Anything else (an alias or anchor reused, a merge key `<<`, `=`, another tag,
  an unhashable key, nesting too deep, any error) builds the whole document again with PyYAML's
  SafeConstructor, so its result and its errors are PyYAML's. A test compares the two on generated
  documents.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agentgov.engine.gc_pause import gc_paused

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP, _SEQ, _STR = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str"
# Scalar tags whose SafeConstructor functions return a value directly (no generator, no state).
_PLAIN_SCALARS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"})


class _Unusual(Exception):
    """The document needs PyYAML's general constructor."""


class _DataLoader(_BASE):  # type: ignore[misc]
    """The safe loader with a remembered scalar resolver and a direct builder for plain documents."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._resolved: dict[tuple[str, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # Path resolvers would make the tag depend on the position too: none exist on the safe loader.
        if kind is ScalarNode and not self.yaml_path_resolvers:
            key = (value, implicit)
            tag = self._resolved.get(key)
            if tag is None:
                tag = self._resolved[key] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)

    def construct_document(self, node: Node) -> Any:
        try:
            return self._build(node, set())
        except (_Unusual, RecursionError, TypeError, ValueError, yaml.YAMLError):
            return super().construct_document(node)

    def _build(self, node: Node, seen: set[int]) -> Any:
        tag = node.tag
        if type(node) is ScalarNode:
            if tag == _STR:
                return node.value
            if tag in _PLAIN_SCALARS:
                return self.yaml_constructors[tag](self, node)
            raise _Unusual
        if id(node) in seen:  # an alias: PyYAML shares one object (and refuses recursion)
            raise _Unusual
        seen.add(id(node))
        if type(node) is MappingNode and tag == _MAP:
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if type(key_node) is not ScalarNode:
                    raise _Unusual  # a collection key: PyYAML's error (merge `<<` and `=` keys have
                    # their own tags, which _build refuses)
                out[self._build(key_node, seen)] = self._build(value_node, seen)
            return out
        if type(node) is SequenceNode and tag == _SEQ:
            return [self._build(child, seen) for child in node.value]
        raise _Unusual


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`: the same documents, types and errors, on the C loader when present."""
    with gc_paused():
        loader = _DataLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
