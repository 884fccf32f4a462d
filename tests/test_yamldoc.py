"""The data loader is `yaml.safe_load`, faster: the same values and the same errors on generated
documents, PyYAML's own constructor for anything beyond plain data (aliases shared, not copied), and
the garbage collector paused only while a load runs."""

from __future__ import annotations

import datetime
import gc
import threading
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine import gc_pause
from agentgov.engine.gc_pause import gc_paused
from agentgov.engine.yamldoc import load_yaml

# Plain scalars YAML 1.1 reads as other types, or nearly does: the resolver must read each the same.
TRICKY = ["yes", "No", "on", "OFF", "~", "null", "", "0x1F", "0o17", "017", "1_000", "1e3", "1.5e3", ".inf",
          "-.Inf", ".nan", "2026-12-04", "2026-12-04 10:00:00", "2026-12-04T10:00:00Z", "12:30:45",
          "1:20", "+12", "0b101", "=", "<<", "True", "y", "n", "3.", "-0", "0.1_0"]
scalars = st.one_of(st.sampled_from(TRICKY), st.text(max_size=8), st.integers(), st.floats(allow_nan=False),
                    st.booleans(), st.none())
plain_keys = st.one_of(st.sampled_from(TRICKY), st.text(max_size=6), st.integers(-3, 3))
data = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(plain_keys, inner, max_size=4)),
                    max_leaves=20)


# What the loader replaced: safe_load on libyaml's C loader (the same values as yaml.safe_load; its
# error messages are libyaml's, without the pure Python loader's snippet).
REFERENCE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _reference(text: str) -> tuple[Any, Exception | None]:
    try:
        return yaml.load(text, Loader=REFERENCE), None  # noqa: S506 - the safe loader
    except Exception as exc:
        return None, exc


def _same(text: str) -> None:
    expected, refused = _reference(text)
    if refused is not None:
        with pytest.raises(type(refused)) as raised:
            load_yaml(text)
        assert str(raised.value) == str(refused)
        return
    got = load_yaml(text)
    assert got == expected or (got != got and expected != expected)
    assert repr(got) == repr(expected)  # same types too: 1 vs True vs 1.0, dates, None
    assert got == yaml.safe_load(text) or got != got


@settings(max_examples=300, deadline=None)
@given(data, st.sampled_from([{}, {"default_flow_style": True}, {"default_style": '"'}, {"default_style": "'"}]))
def test_dumped_documents_load_as_safe_load_loads_them(value: Any, style: dict[str, Any]) -> None:
    _same(yaml.safe_dump(value, **style))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*TRICKY, "a", "b: c", "- d", "[e, f]", "{g: h}", "&x i", "*x",
                                           "!!str 5", "!!set {a, b}", "? k", "<<: {m: 1}"]),
                          st.integers(0, 2)), max_size=6))
def test_hand_shaped_documents_load_and_fail_as_safe_load_does(lines: list[tuple[str, int]]) -> None:
    _same("\n".join("  " * indent + f"k{i}: {text}" for i, (text, indent) in enumerate(lines)))


@pytest.mark.parametrize("text", [
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",        # merge keys
    "a: &l [1, 2]\nb: *l\n",                                       # a shared list
    "? [1, 2]\n: unhashable\n",                                    # a collection key
    "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\np: !!pairs [{a: 1}]\nbin: !!binary aGVsbG8=\n",
    "t: 2026-12-04 10:00:00.5 +02:00\nd: 2026-02-30\n",            # a timestamp, an impossible date
    "=: value\n",
    "a: !python/object:os.system x\n",                             # refused as safe_load refuses it
    "a: [1, 2\n",                                                  # a syntax error
    "x: 1\n---\ny: 2\n",                                           # two documents
    "n: " + "[" * 200 + "]" * 200 + "\n",                          # deep nesting
    "a: &x 1\nb: &x 2\n",                                          # a scalar anchor defined twice
    "a: &m {k: 1}\nb: &m [2]\n",                                   # a collection anchor defined twice
    "a: &u unused\nb: !!str 5\nc: !!map {d: !!seq [! 7]}\n",        # an unused anchor, standard tags
])
def test_documents_beyond_plain_data_follow_pyyaml(text: str) -> None:
    _same(text)


def test_plain_data_is_built_from_events_without_a_node_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node tree is what made a large catalog's peak memory: plain data never composes one, and
    anything unusual still does, so PyYAML builds it."""
    composed: list[str] = []
    real = REFERENCE.get_single_node

    def spy(self: Any) -> Any:
        composed.append("composed")
        return real(self)

    monkeypatch.setattr(REFERENCE, "get_single_node", spy)
    catalog = {"tool": {f"t{i}": {"roles": ["analyst", "support"], "pii": "redact", "limit": i, "on": True,
                                   "since": datetime.date(2026, 12, i % 28 + 1), "note": None}
                        for i in range(50)}}
    assert load_yaml(yaml.safe_dump(catalog)) == catalog
    assert composed == []
    assert load_yaml("a: &l [1]\nb: *l\n") == {"a": [1], "b": [1]}
    assert composed == ["composed"]


def test_aliases_stay_shared_instead_of_copied() -> None:
    """A billion-laughs document keeps PyYAML's sharing: each level is one object, not copies."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    doc = load_yaml("\n".join(levels))
    top = doc["i"]
    assert top[0] is top[8]
    assert top[0][0] is top[8][8]


def test_a_timestamp_is_a_datetime_as_with_safe_load() -> None:
    assert load_yaml("at: 2026-12-04T10:00:00Z") == {"at": datetime.datetime(2026, 12, 4, 10, 0,
                                                                             tzinfo=datetime.UTC)}


def test_the_collector_is_paused_only_during_loads_and_nested_pauses_restore_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_pause, "_serving", False)  # an in-process worker earlier in the run set it
    assert gc.isenabled()
    seen: list[bool] = []
    with gc_paused():
        seen.append(gc.isenabled())
        inner_done = threading.Event()

        def other_thread() -> None:
            with gc_paused():
                seen.append(gc.isenabled())
            inner_done.set()

        thread = threading.Thread(target=other_thread)
        thread.start()
        assert inner_done.wait(10)
        thread.join()
        seen.append(gc.isenabled())  # the other pause ended first: still paused for this one
    assert seen == [False, False, False]
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a process that keeps it off keeps it off
    finally:
        gc.enable()
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [")
    assert gc.isenabled()  # restored after a failed load too


def test_a_serving_process_never_pauses_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a worker serves, a paused collector's deferred scan would land on decisions: reloads
    build with the collector as it is."""
    monkeypatch.setattr(gc_pause, "_serving", False)
    gc_pause.serving_started()
    with gc_paused():
        assert gc.isenabled()
    assert load_yaml("a: 1") == {"a": 1}
