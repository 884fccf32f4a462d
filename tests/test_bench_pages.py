"""`make bench` rewrites only the generated sections of docs/benchmarks.md: the hand-written
before/after history between them survives every run (bench/run.py once rewrote the whole page)."""

from __future__ import annotations

from bench.run import LAYERS_END, LAYERS_START, merge_section
from tests.conftest import REPO

HISTORY = "## A change (2026-12-04)\n\n| change | before | after |\n| --- | ---: | ---: |\n| x | 1 | 2 |\n"


def _section(marker: str) -> str:
    return f"{LAYERS_START}\n## By layer: where the time of one decision goes\n\n{marker}\n{LAYERS_END}"


def test_only_the_layers_section_is_replaced_and_again_changes_nothing() -> None:
    page = (f"# Benchmarks\n\n<!-- gateway:start -->\ngateway table\n<!-- gateway:end -->\n\n{HISTORY}\n"
            f"{_section('old numbers')}\n\n<!-- catalog:start -->\ncatalog\n<!-- catalog:end -->\n")
    merged = merge_section(page, _section("new numbers"))
    assert merged == page.replace("old numbers", "new numbers")
    assert merge_section(merged, _section("new numbers")) == merged


def test_a_page_from_before_the_markers_keeps_its_history_and_the_sections_after() -> None:
    page = (f"# Benchmarks\n\n<!-- gateway:start -->\ng\n<!-- gateway:end -->\n\n{HISTORY}\n"
            "## By layer: where the time of one decision goes\n\nold table\n\n## PII and secrets\n\nold\n\n"
            "<!-- catalog:start -->\ncatalog\n<!-- catalog:end -->\n")
    merged = merge_section(page, _section("new numbers"))
    assert HISTORY in merged
    assert "old table" not in merged
    assert "## PII and secrets\n\nold" not in merged
    assert merged.endswith("<!-- catalog:start -->\ncatalog\n<!-- catalog:end -->\n")
    assert merge_section(merged, _section("newer")) == merged.replace("new numbers", "newer")


def test_the_shipped_page_has_each_generated_section_once() -> None:
    page = (REPO / "docs" / "benchmarks.md").read_text()
    for name in ("gateway", "tracing", "layers", "catalog"):
        assert page.count(f"<!-- {name}:start -->") == 1
        assert page.count(f"<!-- {name}:end -->") == 1
    assert "(2026-12-03)" in page  # the hand-written history is there
