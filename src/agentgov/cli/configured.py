"""What commands other than `serve` need of the configuration: the same resolver, one way to
report its errors, and the audit folder as the default for the commands that read the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.config import Config, ConfigError, environment, resolve

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
S = TypeVar("S")


def with_store(open_store: Callable[[], S], close: Callable[[S], Awaitable[None]], work: Callable[[S], Awaitable[T]],
               unavailable: type[Exception], label: str) -> T:
    """Open a store, do `work`, close it; a store that cannot answer is one line (`LABEL unavailable:
    …`) and exit 1, never a traceback."""
    async def run() -> T:
        store = open_store()
        try:
            return await work(store)
        finally:
            await close(store)

    try:
        return asyncio.run(run())
    except unavailable as exc:
        click.echo(f"{label} unavailable: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None


def config_option(help_text: str) -> Callable[[F], F]:
    return click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                        envvar="AGENTGOV_CONFIG", help=help_text)


def resolved(config_path: Path, flags: Mapping[str, tuple[str, Any]] | None = None) -> Config:
    """The configuration as `serve` would resolve it (file, AGENTGOV_* variables, `flags`); a
    problem is one `config error:` message and exit 1."""
    try:
        return resolve(config_path, environment(), flags or {})
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None


def audit_paths(paths: tuple[Path, ...], config_path: Path | None) -> tuple[Path, ...]:
    """The audit log folders named, else the configuration's `audit.dir`."""
    if paths:
        return paths
    if config_path is None:
        raise click.UsageError("give the audit log PATH(s), or --config FILE with an `audit.dir`")
    cfg = resolved(config_path)
    directory = cfg.audit.get("dir")
    if not directory:
        click.echo(f"config error: {config_path}: the configuration has no `audit.dir`", err=True)
        raise SystemExit(EXIT_ERROR)
    located = cfg.base / str(directory)
    if not located.is_dir():
        click.echo(f"error: the audit folder {located} does not exist (no decision recorded yet?)", err=True)
        raise SystemExit(EXIT_ERROR)
    return (located,)
