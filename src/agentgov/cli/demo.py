"""`agentgov demo`: decide a set of sample agent requests with every engine, side by side."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import yaml

from agentgov.cli.output import EXIT_ERROR, report_problems
from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import build_backends, default_policy_path
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy_input import InputError, normalize_input


@click.command()
@click.option("--policies", "policy_dir", default=None, type=click.Path(file_okay=False),
              help="Policy folder (default: ./policies if there is one, else the shipped library).")
@click.option("--requests", "requests_file", default=None, type=click.Path(dir_okay=False),
              help="Sample requests (default: <policies>/examples/requests.yaml).")
def demo(policy_dir: str | None, requests_file: str | None) -> None:
    """Show the shipped policy library deciding sample agent requests, in Rego and Cedar."""
    policy_dir = policy_dir or str(default_policy_path())
    path = Path(requests_file or Path(policy_dir) / "examples" / "requests.yaml")
    try:
        samples = yaml.safe_load(path.read_text(encoding="utf-8"))["requests"]
        inputs = [(s["title"], normalize_input(s["input"])) for s in samples]
        backends = build_backends(discover([policy_dir]))
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    except (OSError, KeyError, TypeError, InputError, yaml.YAMLError) as exc:
        click.echo(f"{path}: cannot read sample requests: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    rows = asyncio.run(_decide(backends, inputs))
    agree = all(len({(d["allow"], tuple(d["reasons"]), d["status"]) for d in row[1].values()}) == 1 for row in rows)
    for title, decisions in rows:
        click.echo(click.style(title, bold=True))
        for engine, d in decisions.items():
            verdict = click.style("ALLOW", fg="green") if d["allow"] else click.style(f"DENY {d['status']}", fg="red")
            extra = {k: v for k, v in d["obligations"].items() if v}
            click.echo(f"  {engine:6} {verdict:<20} reasons={','.join(d['reasons'])}"
                       + (f" obligations={json.dumps(extra, sort_keys=True)}" if extra else ""))
    click.echo("engines agree on every request" if agree else "ENGINES DISAGREE on at least one request")
    if not agree:
        raise SystemExit(2)


async def _decide(backends: dict[str, DecisionBackend],
                  inputs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    rows = []
    for title, policy_input in inputs:
        rows.append((title, {name: (await b.evaluate(policy_input)).to_dict() for name, b in backends.items()}))
    return rows
