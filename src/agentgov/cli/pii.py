"""`agentgov pii scan`: run the PII and secrets detectors over text, for tuning and bulk evaluation.

Prints character offsets and types only (never the matched text), so the output can be shared.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.config import ConfigError, environment, resolve
from agentgov.engine.hooks.pii.hook import PiiConfigError, settings_from_config
from agentgov.engine.hooks.pii.scanner import Scanner


@click.group()
def pii() -> None:
    """PII and secrets detection."""


@pii.command()
@click.option("--jsonl", is_flag=True, help="Read one JSON string per line; print one result per line.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG",
              help="Use the `pii:` settings of this agentgov.yaml (types, confidence, allow-lists).")
def scan(jsonl: bool, config_path: Path | None) -> None:
    """Read text on stdin and print the findings as [{"start", "end", "type"}] (character offsets)."""
    try:
        settings = dict(resolve(config_path, environment()).pii) if config_path else {}
        settings.pop("enabled", None)
        scanner = Scanner(settings_from_config(settings).scan)
    except (ConfigError, PiiConfigError) as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict")
    try:
        if not jsonl:
            click.echo(json.dumps(_findings(scanner, stdin.read())))
            return
        for number, line in enumerate(stdin, start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"line {number}: not JSON ({exc.msg})") from None
            if not isinstance(text, str):
                raise click.ClickException(f"line {number}: expected a JSON string, got {type(text).__name__}")
            click.echo(json.dumps(_findings(scanner, text)))
    except UnicodeDecodeError:
        click.echo("error: standard input is not valid UTF-8", err=True)
        raise SystemExit(EXIT_ERROR) from None
    sys.stdout.flush()


def _findings(scanner: Scanner, text: str) -> list[dict[str, object]]:
    return [{"start": s.start, "end": s.end, "type": s.type} for s in scanner.scan(text)]
