"""`agentgov shadow report`: what a candidate policy running in shadow mode would have changed,
read from the audit log's flip records (docs/shadow.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from agentgov.cli.audit import records_in
from agentgov.cli.configured import audit_paths, config_option
from agentgov.cli.output import EXIT_FAILED
from agentgov.engine.policy.shadow import summarize


@click.group()
def shadow() -> None:
    """Shadow mode: a candidate bundle evaluated on live traffic, never enforced."""


@shadow.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option("Read the configuration's audit.dir when no PATHS are given.")
@click.option("--candidate", default="", help="Only flips of this candidate revision (as the records name it).")
@click.option("--since", default="", help="Only flips at or after this ISO 8601 time (UTC, as records are).")
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)
@click.option("--fail-on-flips", is_flag=True, help="Exit 2 when there is any flip (for a promotion gate).")
def report(paths: tuple[Path, ...], config_path: Path | None, candidate: str, since: str, fmt: str,
           fail_on_flips: bool) -> None:
    """Summarise the flips in the audit logs under PATHS: by kind, and grouped by action and answers."""
    summary = summarize(records_in(audit_paths(paths, config_path)), candidate=candidate, since=since)
    if fmt == "json":
        click.echo(json.dumps(summary.to_dict(), indent=2))
    elif not summary.flips:
        click.echo("no flips: the candidate answered every shadowed decision as the active policy did")
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.by_kind.items()))
        click.echo(f"{summary.flips} flip(s) from {summary.first} to {summary.last}: {kinds}")
        click.echo(f"candidate {', '.join(sorted(summary.candidates))} vs active {', '.join(sorted(summary.active))}")
        for group in summary.sorted_groups():
            click.echo(f"  {group.count:>6}  {group.kind:<14} {group.action}: {group.active} -> {group.candidate}"
                       f"  ({len(group.subjects)} subject(s); e.g. {', '.join(group.examples)})")
    if fail_on_flips and summary.flips:
        raise SystemExit(EXIT_FAILED)
