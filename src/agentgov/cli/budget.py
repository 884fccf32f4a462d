"""`agentgov budget show|reset`: what each budget limit has used in its current window, and clearing it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from agentgov.cli.configured import with_store
from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.config import ConfigError, default_config_path, environment, resolve
from agentgov.engine.hooks.budget.hook import open_store
from agentgov.engine.hooks.budget.limits import BudgetConfigError, BudgetSettings, settings_from_config
from agentgov.engine.hooks.budget.report import usage_report
from agentgov.engine.hooks.budget.store import BudgetStore, StoreError

T = TypeVar("T")


def _settings(config_path: Path | None) -> tuple[BudgetSettings, Path]:
    try:
        path = config_path or default_config_path()
        if path is None:
            raise ConfigError("no configuration found: give --config FILE (or AGENTGOV_CONFIG), or run where "
                              "an agentgov.yaml with a `budgets:` section is")
        cfg = resolve(path, environment())
        if cfg.budgets is None:
            raise ConfigError(f"{path}: the configuration has no `budgets:` section")
        return settings_from_config(cfg.budgets), cfg.base
    except (ConfigError, BudgetConfigError) as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None


def _with_store(settings: BudgetSettings, base: Path, work: Callable[[BudgetStore], Awaitable[T]]) -> T:
    return with_store(lambda: open_store(settings, base), lambda store: store.close(), work, StoreError,
                      "budget store")


def _filter(subject: str | None, tenant: str | None, key: str | None) -> str:
    given = [v for v in (f"subject={subject}" if subject else None, f"tenant={tenant}" if tenant else None, key) if v]
    if len(given) > 1:
        raise click.UsageError("give one of --subject, --tenant, --key")
    return given[0] if given else ""


@click.group()
def budget() -> None:
    """Budgets and rate limits (docs/budgets.md)."""


@budget.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG")
@click.option("--subject")
@click.option("--tenant")
@click.option("--key", help="A raw key, e.g. `subject=alice|model=gpt-4o`.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(config_path: Path | None, subject: str | None, tenant: str | None, key: str | None, fmt: str) -> None:
    """Usage per limit and key in the current window: requests, tokens, USD, and what is left."""
    settings, base = _settings(config_path)
    contains = _filter(subject, tenant, key)
    out = _with_store(settings, base, lambda store: usage_report(settings, store, contains))
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{'limit':20} {'key':36} {'window':7} {'requests':>9} {'tokens':>10} {'USD':>10}  left")
    for r in out:
        left = ", ".join(f"{k} {v}" for k, v in r["remaining"].items() if v is not None)
        click.echo(f"{r['limit'][:20]:20} {r['key'][:36]:36} {r['window']:7} {r['requests']:>9} {r['tokens']:>10} "
                   f"{r['cost_usd']:>10.4f}  {left}")


@budget.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG")
@click.option("--subject")
@click.option("--tenant")
@click.option("--key")
@click.option("--all", "everything", is_flag=True, help="Every limit and key.")
def reset(config_path: Path | None, subject: str | None, tenant: str | None, key: str | None, everything: bool) -> None:
    """Forget usage (for one subject, tenant or key, or --all): the next request starts a fresh window."""
    settings, base = _settings(config_path)
    contains = _filter(subject, tenant, key)
    if not contains and not everything:
        raise click.UsageError("say what to reset: --subject, --tenant, --key, or --all")

    removed = _with_store(settings, base, lambda store: store.reset(contains))
    click.echo(f"reset: {removed} usage record(s) removed")
