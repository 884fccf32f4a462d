"""Renderings of a DiffReport: a terminal, JSON, JUnit, a pull-request comment (Markdown) and
GitHub workflow annotations."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from agentgov.engine.testing.diff import Change, DiffReport


def _summary(report: DiffReport) -> str:
    approved = len(report.changes) - len(report.blocking)
    return (f"{report.replayed} input(s) replayed on {', '.join(report.engines)}: {len(report.changes)} changed "
            f"({len(report.blocking)} unapproved, {approved} approved), {len(report.skipped)} skipped")


def _short(answer: dict[str, Any]) -> str:
    verdict = "allow" if answer["allow"] else "deny"
    errors = f" errors={answer['errors']}" if answer.get("errors") else ""
    return f"{verdict} {answer['status']} {','.join(answer['reasons'])}{errors}"


def render_pretty(report: DiffReport) -> str:
    lines = []
    for change in report.changes:
        mark = "approved" if change.approved_by else "CHANGED"
        lines.append(f"{mark:8} [{change.engine}] {change.input.id}: {change.kind}")
        lines.append(f"         base: {_short(change.base)}")
        lines.append(f"         head: {_short(change.head)}")
        if change.approved_by:
            lines.append(f"         why:  {change.approved_by}")
    lines.extend(f"skipped  {item}" for item in report.skipped)
    lines.extend(f"warning  approval for {item!r} matched nothing (stale?)" for item in report.unused_approvals)
    lines.append(_summary(report))
    return "\n".join(lines)


def render_json(report: DiffReport) -> str:
    return json.dumps({
        "replayed": report.replayed, "engines": list(report.engines), "skipped": report.skipped,
        "unused_approvals": report.unused_approvals,
        "changes": [{"input": c.input.id, "file": c.input.file, "line": c.input.line, "engine": c.engine,
                     "kind": c.kind, "fields": list(c.fields), "base": c.base, "head": c.head,
                     "approved": bool(c.approved_by), "why": c.approved_by or None} for c in report.changes],
    }, indent=2)


def render_junit(report: DiffReport) -> str:
    cases = []
    for change in report.changes:
        name = quoteattr(f"[{change.engine}] {change.input.id}")
        if change.approved_by:
            cases.append(f"  <testcase classname=\"agentgov.diff\" name={name}/>")
        else:
            detail = escape(f"base: {_short(change.base)}\nhead: {_short(change.head)}")
            cases.append(f"  <testcase classname=\"agentgov.diff\" name={name}>\n"
                         f"    <failure message={quoteattr(change.kind)}>{detail}</failure>\n  </testcase>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="agentgov diff" tests="{len(report.changes)}" '
            f'failures="{len(report.blocking)}">\n' + "\n".join(cases) + "\n</testsuite>")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: DiffReport) -> str:
    head = "### agentgov diff: " + ("no decision changes" if not report.changes else
                                     f"{len(report.blocking)} unapproved decision change(s)")
    lines = [head, "", _summary(report), ""]
    if report.changes:
        lines += ["| | engine | input | change | base | head |", "|---|---|---|---|---|---|"]
        for c in report.changes:
            mark = "✅ approved" if c.approved_by else "❌"
            lines.append(f"| {mark} | {c.engine} | `{_cell(c.input.id)}` | {_cell(c.kind)} | "
                         f"{_cell(_short(c.base))} | {_cell(_short(c.head))} |")
    return "\n".join(lines)


def _annotation(change: Change) -> str:
    level = "notice" if change.approved_by else "error"
    message = f"[{change.engine}] {change.input.id}: {change.kind} (base: {_short(change.base)}; head: {_short(change.head)})"
    message = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    file = change.input.file.replace(",", "%2C").replace(":", "%3A")
    return f"::{level} file={file},line={change.input.line},title=agentgov diff::{message}"


def render_github(report: DiffReport) -> str:
    return "\n".join([*(_annotation(c) for c in report.changes), _summary(report)])


RENDERERS = {"pretty": render_pretty, "json": render_json, "junit": render_junit, "markdown": render_markdown,
             "github": render_github}
