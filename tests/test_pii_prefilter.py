"""The one-pass cue prefilter (Hyperscan) must change the cost of a scan, never its findings: with it
and with the detectors' own search, every text gives the same spans."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine.hooks.pii import detectors, prefilter
from agentgov.engine.hooks.pii.detectors import DETECTORS, Detector, Text
from agentgov.engine.hooks.pii.scanner import Scanner
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(prefilter.hyperscan is None, reason="the hyperscan wheel is not installed here")

SCANNER = Scanner()
CORPUS = [json.loads(line)["text"] for path in sorted((REPO / "tests" / "data" / "pii").glob("*.jsonl"))
          for line in Path(path).read_text().splitlines() if line.strip()]
_PIECES = ["DOB", "date of birth:", "born on", "March", "15", "1987", "/", "-", ".", "SSN", "+1", "+44", "202", "555",
           "0711", "(415)", "@", "ex.com", "jane.doe@example.org", "AKIA", "AKIAIOSFODNN7EXAMPLE", "AROAROA", "Basic",
           "bearer", "password=", "PassWord=", "pwd=", "://", "postgres://app:Zx81kq0Lw@db", ":", ";", "GB82", "WEST",
           "GB82 WEST 1234 5698 7654 32", "0x", "bc1q", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "-----BEGIN ", "eyJ",
           "sk-", "sk-ant-", "ghp_", "github_pat_", "xoxb-", "https://hooks.slack.com/", "AccountKey=", "azure",
           "4111 1111 1111 1111", "4111", "123-45-6789", "10.0.0.1", "2001:db8::1", "token", "secret", "key", "aws",
           "x" * 30, "Zq8vN3kR7pW2mX5t", "fe80::1ff:fe23:4567:890a", "a:b:c:d:e:f:a:b", "date of birth", "D.O.B.",
           "born", "03/15/1987", "1987-03-15"]


def spans(text: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.type) for s in SCANNER.scan(text)]


def without_prefilter(text: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, str]]:
    with monkeypatch.context() as m:
        m.setattr(detectors, "_prefilter", lambda: prefilter.Prefilter(()))
        assert Text(text).cues is None
        return spans(text)


def padded(text: str) -> str:
    """Text as long as a prompt's line, around what the test puts in it."""
    return text + " and some more words around it" * 2


def test_the_prefilter_serves_ascii_text_only() -> None:
    assert Text(padded("plain words")).cues is not None
    assert Text("acme").cues is not None
    assert Text(padded("café au lait, jane@example.org")).cues is None  # offsets would be bytes, not characters


@pytest.mark.parametrize("text", [t for t in CORPUS if t.isascii()][:400])
def test_the_corpus_gives_the_same_findings_either_way(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert spans(padded(text)) == without_prefilter(padded(text), monkeypatch)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(["", " ", ",", "\n", "=", "'", "\"", "."])),
                min_size=4, max_size=30))
def test_text_built_from_cues_gives_the_same_findings_either_way(parts: list[tuple[str, str]]) -> None:
    text = padded("".join(piece + sep for piece, sep in parts))
    with_cues = spans(text)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(detectors, "_prefilter", lambda: prefilter.Prefilter(()))
        assert with_cues == spans(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300))
def test_any_ascii_text_gives_the_same_findings_either_way(text: str) -> None:
    with_cues = spans(text)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(detectors, "_prefilter", lambda: prefilter.Prefilter(()))
        assert with_cues == spans(text)


def test_overlapping_cues_are_read_as_finditer_reads_them() -> None:
    """`AROA` twice, overlapping: the token search starts where finditer would, not at every cue."""
    text = padded("key AROAROAB2CDEFGHIJKLMNOPQ and more")
    with pytest.MonkeyPatch.context() as m:
        expected = [mt.start() for mt in detectors._TOKENS["AWS_KEY"][0][0].finditer(text)]
        m.setattr(detectors, "_prefilter", lambda: prefilter.Prefilter(()))
    assert [mt.start() for mt in Text(text).matches(detectors._TOKENS["AWS_KEY"][0][0])] == expected


def test_digit_runs_are_the_runs_the_regex_finds() -> None:
    text = padded("call 202 555 0711 or 4111-1111-1111-1111 -- 12 then 1234567890123 and (415) 555-0100.")
    fallback = Text(text)
    fallback._cues = None
    assert Text(text).digit_windows() == fallback.digit_windows()


def test_a_detector_whose_cue_is_not_looked_for_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detectors, "DETECTORS", (*DETECTORS, Detector("EMAIL", "pii", lambda t, c: iter(()), 1,
                                                                      ("s:never-registered",))))
    with pytest.raises(RuntimeError, match="never-registered"):
        detectors._check_cues()


def test_threads_scan_with_scratch_spaces_of_their_own() -> None:
    texts = [padded(t) for t in CORPUS if t.isascii()][:60]
    expected = [spans(t) for t in texts]
    results: dict[int, list[list[tuple[int, int, str]]]] = {}

    def run(n: int) -> None:
        results[n] = [spans(t) for _ in range(5) for t in texts][:len(texts)]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


def _iter_cues() -> Iterator[str]:
    yield from (key for d in DETECTORS for key in d.cues)


def test_every_detector_cue_has_a_prefilter_pattern() -> None:
    assert set(_iter_cues()) <= detectors._CUE_KEYS
