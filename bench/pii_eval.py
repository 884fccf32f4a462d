"""Precision and recall of the PII/secrets detectors per type, on a labelled JSONL corpus.

    python bench/pii_eval.py CORPUS.jsonl [...] [--json]

Each line: {"id", "text", "spans": [[start, end, TYPE], ...]}. A finding counts as a true positive
when a labelled span of the same (mapped) type overlaps it. Some agentgov types are finer than
the corpus labels: they are scored under the corpus label they belong to (CORPUS_LABEL below).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from agentgov.engine.hooks.pii.scanner import Scanner

# agentgov type → the dev corpus's label for it (types not listed keep their own name).
CORPUS_LABEL = {"STRIPE_KEY": "GENERIC_SECRET", "AWS_SECRET_KEY": "GENERIC_SECRET", "URL_CREDENTIALS": "GENERIC_SECRET"}
# Types the corpus does not label at all: their findings are reported, not scored.
UNLABELLED = {"DATE_OF_BIRTH"}


def evaluate(paths: list[Path]) -> dict[str, Any]:
    scanner = Scanner()
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    errors: list[dict[str, Any]] = []
    chars = 0
    elapsed = 0.0
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            doc = json.loads(line)
            text: str = doc["text"]
            chars += len(text.encode("utf-8"))
            started = time.perf_counter()
            found = scanner.scan(text)
            elapsed += time.perf_counter() - started
            gold = [(s, e, t) for s, e, t in doc["spans"]]
            matched: set[int] = set()
            for span in found:
                label = CORPUS_LABEL.get(span.type, span.type)
                if span.type in UNLABELLED:
                    continue
                hit = next((i for i, (s, e, t) in enumerate(gold)
                            if t == label and i not in matched and s < span.end and span.start < e), None)
                if hit is None:
                    fp[label] += 1
                    errors.append({"id": doc["id"], "kind": "false_positive", "type": label,
                                   "span": [span.start, span.end]})
                else:
                    tp[label] += 1
                    matched.add(hit)
            for i, (s, e, t) in enumerate(gold):
                if i not in matched:
                    fn[t] += 1
                    errors.append({"id": doc["id"], "kind": "missed", "type": t, "span": [s, e]})
    rows = {}
    for label in sorted(set(tp) | set(fp) | set(fn)):
        p_den, r_den = tp[label] + fp[label], tp[label] + fn[label]
        rows[label] = {"tp": tp[label], "fp": fp[label], "fn": fn[label],
                       "precision": tp[label] / p_den if p_den else 1.0,
                       "recall": tp[label] / r_den if r_den else 1.0}
    return {"types": rows, "errors": errors, "ms_per_kb": elapsed * 1000 / (chars / 1024) if chars else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = evaluate(args.corpus)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        return
    print(f"{'type':<18} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}")
    for label, r in result["types"].items():
        print(f"{label:<18} {r['tp']:>4} {r['fp']:>4} {r['fn']:>4} {r['precision']:>9.3f} {r['recall']:>7.3f}")
    for e in result["errors"]:
        print(f"  {e['kind']}: {e['id']} {e['type']} {e['span']}")
    print(f"scan cost: {result['ms_per_kb']:.3f} ms/KB")


if __name__ == "__main__":
    main()
