"""`agentgov check PATH…`: parse, compile and statically check Rego and Cedar without running them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from agentgov.cli.configured import config_option, resolved
from agentgov.cli.output import EXIT_ERROR, FORMAT_PRETTY_JSON, report_problems
from agentgov.engine.config.unread import unread_results
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import check_sources, default_policy_path
from agentgov.engine.policy.problems import PolicyLoadError


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "fmt", type=FORMAT_PRETTY_JSON, default="pretty", show_default=True)
@config_option("Also warn when a hook this agentgov.yaml turns on computes what the policy never reads.")
def check(paths: tuple[str, ...], fmt: str, config_path: Path | None) -> None:
    """Check policies (default: ./policies, else the shipped library): syntax, unsupported builtins
    (with rule and line), what real OPA would refuse, Cedar schema validation."""
    paths = paths or (str(default_policy_path()),)
    try:
        sources = discover(paths)
        problems = check_sources(sources)
        if problems:
            raise PolicyLoadError(problems)
    except PolicyLoadError as exc:
        report_problems(exc, fmt)
        raise SystemExit(EXIT_ERROR) from None
    if sources.empty:
        click.echo("no Rego or Cedar policies found", err=True)
        raise SystemExit(EXIT_ERROR)
    warnings = unread_results(resolved(config_path), sources) if config_path is not None else []
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    counts = {"rego": len(sources.rego) + len(sources.rego_tests), "cedar": len(sources.cedar)}
    if fmt == "json":
        click.echo(json.dumps({"errors": [], "warnings": warnings, "files": counts}))
    else:
        click.echo(f"ok: {counts['rego']} Rego file(s), {counts['cedar']} Cedar file(s)")
