"""YAML data documents (policy data, bundle data, catalogs): exactly `yaml.safe_load`, faster and smaller.

Read with libyaml's C loader when PyYAML has it (the pure Python loader took 8.9 s on a 20,000-tool
catalog, the C loader 3.6 s; docs/benchmarks.md). Even the C loader composes the whole document into
nodes first, each with two marks, all alive until the end: on that catalog the node tree held about
100 MB while the data it becomes holds 20 (the cyclic collector also kept re-scanning it: it is paused
during a load, see gc_pause). It then resolves every scalar's tag and builds every value in Python,
one generator-driven call per node. Two things here are hand-written for that hot path, each falling
back to PyYAML's own code wherever its meaning could differ:

- a document made only of mappings, sequences and the standard scalar tags, with no anchors, is
  built straight from libyaml's events, so nothing but the result outlives an event. Anything else
  (an anchor or alias, a merge key `<<`, `=`, another tag, a collection key, several documents, any
  error) reads the whole text again with PyYAML's composer and SafeConstructor, so its result (aliases
  shared, not copied) and its errors are PyYAML's. A test compares the two on generated documents;
- the implicit tag of a plain scalar depends only on its text, so it is remembered per load (a
  catalog repeats `classification`, `roles`, `internal` thousands of times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from agentgov.engine.gc_pause import gc_paused

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP, _SEQ, _STR = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str"
# Scalar tags whose SafeConstructor functions return a value directly (no generator, no state).
_PLAIN_SCALARS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"})
# What the composer reads as "no tag given": resolve it from the value (PyYAML's composer does the same).
_NO_TAG = (None, "!")


class _Unusual(Exception):
    """The document needs PyYAML's composer and general constructor."""


class _DataLoader(_BASE):  # type: ignore[misc]
    """The safe loader with a remembered scalar resolver and a builder straight from events."""

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

    def plain_single_data(self) -> Any:
        """The stream's single document built from its events; `_Unusual` where PyYAML must build it."""
        get: Callable[[], Event] = self.get_event
        if type(get()) is not StreamStartEvent:
            raise _Unusual
        first = get()
        if type(first) is StreamEndEvent:
            return None  # an empty stream: safe_load's None
        if type(first) is not DocumentStartEvent:
            raise _Unusual
        value = self._value(get(), get)
        if type(get()) is not DocumentEndEvent or type(get()) is not StreamEndEvent:
            raise _Unusual  # several documents: PyYAML's "expected a single document"
        return value

    def _value(self, event: Event, get: Callable[[], Event]) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            return self._scalar(event)
        if kind is MappingStartEvent:
            self._collection_tag(event, MappingNode, _MAP)
            out: dict[Any, Any] = {}
            while True:
                key = get()
                if type(key) is MappingEndEvent:
                    return out
                if type(key) is not ScalarEvent:
                    raise _Unusual  # an alias or a collection key: PyYAML's sharing or its error
                name = self._scalar(key)
                out[name] = self._value(get(), get)
        if kind is SequenceStartEvent:
            self._collection_tag(event, SequenceNode, _SEQ)
            items: list[Any] = []
            while True:
                item = get()
                if type(item) is SequenceEndEvent:
                    return items
                items.append(self._value(item, get))
        raise _Unusual  # an alias

    def _collection_tag(self, event: Any, kind: type, expected: str) -> None:
        tag = self.resolve(kind, None, event.implicit) if event.tag in _NO_TAG else event.tag
        if event.anchor is not None or tag != expected:
            raise _Unusual

    def _scalar(self, event: Any) -> Any:
        if event.anchor is not None:
            raise _Unusual
        tag = self.resolve(ScalarNode, event.value, event.implicit) if event.tag in _NO_TAG else event.tag
        if tag == _STR:
            return event.value
        if tag in _PLAIN_SCALARS:  # a merge key `<<` or `=` resolves to its own tag and lands below
            return self.yaml_constructors[tag](self, ScalarNode(tag, event.value, style=event.style))
        raise _Unusual


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`: the same documents, types and errors, on the C loader when present."""
    with gc_paused():
        loader = _DataLoader(text)
        try:
            return loader.plain_single_data()
        except (_Unusual, RecursionError, TypeError, ValueError, yaml.YAMLError):
            pass  # read again by PyYAML's own composer and constructor: its result, or its error
        finally:
            loader.dispose()
        loader = _DataLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
