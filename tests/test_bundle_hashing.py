"""OPA's file digests: structured files hash over a canonical text of their value (sorted keys,
Go's escaping, number literals kept), so whitespace and key order never change a signature and
any change of value always does."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agentgov.engine.bundles.hashing import canonical, file_digest, go_string, parse_structured

_plain_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                                    blacklist_characters='"\\\u2028\u2029', blacklist_categories=("Cs",)))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _plain_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_plain_text, inner, max_size=4),
    max_leaves=20)


@given(_json)
def test_canonical_text_is_gos_compact_sorted_json_for_plain_values(value: Any) -> None:
    # OPA's own test pins the hash of a structure to the hash of Go's compact encoding of it.
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@given(_json)
def test_whitespace_and_key_order_do_not_change_a_data_digest(value: Any) -> None:
    doc = {"v": value, "a": [value]}
    compact = json.dumps(doc, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(doc.items()))), indent=3).encode()
    assert file_digest("x/data.json", compact) == file_digest("x/data.json", spaced)


@given(_json, _json)
def test_different_values_give_different_digests(left: Any, right: Any) -> None:
    if json.dumps(left, sort_keys=True) != json.dumps(right, sort_keys=True):
        assert file_digest("data.json", json.dumps({"v": left}).encode()) != \
            file_digest("data.json", json.dumps({"v": right}).encode())


def test_number_literals_are_hashed_as_written_as_go_json_number_keeps_them() -> None:
    assert canonical(parse_structured("data.json", b'{"a": 1.0, "b": 1e3, "c": 123.45678911111111111111}')) == \
        '{"a":1.0,"b":1e3,"c":123.45678911111111111111}'
    assert file_digest("data.json", b'{"a": 1.0}') != file_digest("data.json", b'{"a": 1}')


def test_strings_are_escaped_as_go_escapes_them_with_html_escaping_off() -> None:
    assert go_string("<a href='x'>&</a>") == "\"<a href='x'>&</a>\""
    assert go_string("\b\f\n\r\t\x01\x1f") == '"\\b\\f\\n\\r\\t\\u0001\\u001f"'
    assert go_string("\u2028\u2029 é ™ \x7f") == '"\\u2028\\u2029 é ™ \x7f"'
    assert go_string('"\\') == '"\\"\\\\"'


def test_yaml_data_hashes_as_its_json_value_and_other_files_as_bytes() -> None:
    assert file_digest("a/data.yaml", b"b: [1, 2]\na: x\n") == file_digest("a/data.json", b'{"a":"x","b":[1,2]}')
    rego = b"package p\n\nallow := true\n"
    assert file_digest("p.rego", rego) == hashlib.sha256(rego).hexdigest()
    assert file_digest(".manifest", b'{"revision": "r", "roots": [""]}') == \
        hashlib.sha256(b'{"revision":"r","roots":[""]}').hexdigest()
