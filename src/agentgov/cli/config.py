"""`agentgov config schema|check|show`: the configuration's JSON Schema, every problem in a
configuration at once, and what the resolver makes of file + environment (+ nothing else)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.config import check, default_config_path, environment, resolve, schema
from agentgov.engine.config.build import build_governor
from agentgov.engine.config.settings import ConfigError, Problem
from agentgov.engine.policy.problems import PolicyLoadError

REDACTED_CREDENTIAL = "(set, not shown)"  # printed instead of a credential


@click.group()
def config() -> None:
    """agentgov.yaml: its schema, and checking one."""


@config.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of agentgov.yaml (point your editor's YAML language server at it)."""
    click.echo(json.dumps(schema(), indent=2))


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)
@click.option("--no-env", is_flag=True, help="Check the file alone, without the AGENTGOV_* variables.")
@click.option("--load/--no-load", default=True, show_default=True,
              help="Also build what serve would build (policies, identity, hooks) and report its problems.")
def check_command(file: Path | None, fmt: str, no_env: bool, load: bool) -> None:
    """Report every problem in FILE (default ./agentgov.yaml), one per line as FILE:LINE:COL: message;
    exit 1 when there is any."""
    file = file or default_config_path()
    env = {} if no_env else environment()
    problems = check(file, env)
    if not problems and load:
        problems = _load_problems(file, env)
    if fmt == "json":
        click.echo(json.dumps({"file": str(file) if file else None, "ok": not problems,
                               "problems": [asdict(p) for p in problems]}, indent=2))
    elif problems:
        for problem in problems:
            click.echo(str(problem), err=True)
    else:
        click.echo(f"{file or 'defaults'}: ok")
    if problems:
        raise SystemExit(EXIT_ERROR)


def _load_problems(file: Path | None, env: dict[str, str]) -> list[Problem]:
    """What only building the configuration finds: policies that do not load, issuers without keys,
    hooks that are not installed (the same build `serve` does before it starts any worker)."""
    try:
        build_governor(resolve(file, env))
    except ConfigError as exc:
        return [Problem(str(file) if file and not p.where else p.where, p.key, p.message) for p in exc.problems]
    except PolicyLoadError as exc:
        return [Problem(f"{p.file}:{p.line}:{p.col}", "", p.message) for p in exc.problems]
    return []


@config.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def show_command(file: Path | None) -> None:
    """Print the resolved configuration (file, then AGENTGOV_* variables) as JSON."""
    try:
        cfg = resolve(file or default_config_path(), environment())
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    doc = asdict(cfg)
    for name in ("bundle", "shadow"):  # credentials are never printed
        if doc.get(name) and doc[name].get("token"):
            doc[name]["token"] = REDACTED_CREDENTIAL
    click.echo(json.dumps(doc, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    return str(value)
