"""`agentgov fmt`: Cedar through cedarpy's formatter. Rego is left alone, and we say so.

No formatter for Rego is available from the registries here (regorus has none and the OPA binary
cannot be installed), and a home-made one would rewrite files badly, so Rego files are reported
as not formatted rather than touched.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import cedarpy
import click

from agentgov.cli.output import EXIT_ERROR, EXIT_FAILED


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--check", "check_only", is_flag=True, help="Do not write; exit 2 if any file would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the changes instead of writing them.")
def fmt(paths: tuple[str, ...], check_only: bool, show_diff: bool) -> None:
    """Format Cedar policies in place (Rego: not supported, files are left untouched)."""
    files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    cedar = [f for f in files if f.suffix == ".cedar"]
    rego = [f for f in files if f.suffix == ".rego"]
    changed, failed = 0, 0
    for path in cedar:
        original = path.read_text(encoding="utf-8")
        try:
            formatted = keep_blank_after_comments(original, cedarpy.format_policies(original).rstrip("\n") + "\n")
        except ValueError as exc:
            click.echo(f"{path}: cannot format: {exc}", err=True)
            failed += 1
            continue
        if formatted == original:
            continue
        changed += 1
        if show_diff or check_only:
            click.echo("\n".join(difflib.unified_diff(original.splitlines(), formatted.splitlines(),
                                                      f"{path}", f"{path} (formatted)", lineterm="")))
        if not (check_only or show_diff):
            path.write_text(formatted, encoding="utf-8")
            click.echo(f"formatted {path}")
    if rego:
        click.echo(f"note: {len(rego)} Rego file(s) left unchanged: no trustworthy Rego formatter is "
                   "available to agentgov (the embedded engine has none); use `opa fmt` where OPA is installed.",
                   err=True)
    if failed:
        raise SystemExit(EXIT_ERROR)
    if check_only and changed:
        click.echo(f"{changed} Cedar file(s) need formatting", err=True)
        raise SystemExit(EXIT_FAILED)


def keep_blank_after_comments(original: str, formatted: str) -> str:
    """Cedar's formatter glues a comment to what follows, dropping the blank line that set a section
    comment apart (`// ---- grants ----`, blank, policies). Put back each blank line that followed a
    comment line in the original; stable, so formatting twice changes nothing."""
    lines = original.splitlines()
    separated = [lines[i].strip() for i in range(len(lines) - 1)
                 if lines[i].strip().startswith("//") and not lines[i + 1].strip()]
    out: list[str] = []
    pending = list(separated)
    formatted_lines = formatted.splitlines()
    for i, line in enumerate(formatted_lines):
        out.append(line)
        following = formatted_lines[i + 1] if i + 1 < len(formatted_lines) else ""
        if pending and line.strip() == pending[0]:
            pending.pop(0)
            if following.strip():
                out.append("")
    return "\n".join(out) + "\n"
