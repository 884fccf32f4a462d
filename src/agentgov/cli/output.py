"""How the CLI reports load and compile problems: `file:line:col: message`, or OPA's JSON error shape."""

from __future__ import annotations

import json

import click

from agentgov.engine.policy.problems import PolicyLoadError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAILED = 2

FORMAT_PRETTY_JSON = click.Choice(["pretty", "json"])


def report_problems(exc: PolicyLoadError, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"errors": [p.to_opa() for p in exc.problems]}, indent=2))
    else:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} error(s)", err=True)
