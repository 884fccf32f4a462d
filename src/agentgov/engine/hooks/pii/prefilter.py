"""Every cue the detectors start from, found in one pass over a text (Hyperscan).

The detectors begin at cues: a literal (`@`, `://`, `password=`, `-----BEGIN `), a token prefix
(`ghp_`, `sk-ant-`), a run of digits and separators (cards, phones, SSNs, IPs). Found one by one,
that is ~25 `str.find` calls and a dozen regex sweeps per text, about half the scan of a 2 KB prompt
(measured: bench/run.py, docs/benchmarks.md). Hyperscan finds all of them in one pass over the bytes
(~2 µs for 2 KB); the detectors then run only where their cue is.

Offsets: Hyperscan reports byte offsets, which are character offsets only for ASCII text, and
its `\\d` and case folding are ASCII's. So the prefilter serves ASCII text only; any other text, and
any platform without the `hyperscan` wheel, takes the detectors' own search, which finds the same
cues (tests/test_pii_prefilter.py holds the two to the same findings).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

try:  # manylinux wheels for x86_64; elsewhere the detectors search on their own
    import hyperscan
except ImportError:  # pragma: no cover - exercised on platforms without the wheel
    hyperscan = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Cue:
    """`pattern` (Hyperscan syntax, a subset of Python's here) found at every start offset."""

    key: str
    pattern: str
    caseless: bool = False


class Prefilter:
    def __init__(self, cues: Sequence[Cue]) -> None:
        self.keys = tuple(c.key for c in cues)
        self._db: Any = None
        self._local = threading.local()  # a scratch space per thread: scans must not share one
        if hyperscan is None or not cues:
            return
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[c.pattern.encode() for c in cues], ids=list(range(len(cues))),
                   elements=len(cues),
                   flags=[hyperscan.HS_FLAG_SOM_LEFTMOST | (hyperscan.HS_FLAG_CASELESS if c.caseless else 0)
                          for c in cues])
        self._db = db

    def scan(self, raw: str) -> dict[str, list[tuple[int, int]]] | None:
        """Cue key → (start, end) of every match, in order of end offset; None when this text must
        take the detectors' own search (not ASCII, or no Hyperscan here). Even a four-letter tool
        argument is cheaper this way: 12 µs against 30 (measured), as no detector starts."""
        if self._db is None or not raw.isascii():
            return None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        hits: list[tuple[int, int, int]] = []
        append = hits.append

        def on_match(cue: int, start: int, end: int, _flags: int, _context: object) -> None:
            append((cue, start, end))

        self._db.scan(raw.encode("ascii"), match_event_handler=on_match, scratch=scratch)
        found: dict[str, list[tuple[int, int]]] = {}
        keys = self.keys
        for cue, start, end in hits:
            found.setdefault(keys[cue], []).append((start, end))
        return found
