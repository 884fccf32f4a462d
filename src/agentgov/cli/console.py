"""`agentgov console`: the operators' web console on its own port (docs/console.md).

Also started by `agentgov serve` when agentgov.yaml has a `console:` section (as one more supervised
process, never inside a worker: the console's reads must not take time from decisions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from agentgov.cli.configured import config_option, resolved
from agentgov.cli.output import EXIT_ERROR
from agentgov.console.settings import ConsoleConfigError, ConsoleSettings, console_settings
from agentgov.engine.config import Config, default_config_path


def console_settings_of(cfg: Config, port: int | None = None, host: str | None = None) -> ConsoleSettings:
    """The `console:` section with the command line's --port/--host over it."""

    doc = dict(cfg.console or {})
    if port is not None:
        doc["port"] = port
    if host is not None:
        doc["host"] = host
    if "port" not in doc:
        raise ConsoleConfigError("say where the console listens: console.port in agentgov.yaml, or --port")
    return console_settings(doc)


async def run_console(cfg: Config, port: int | None = None, host: str | None = None,
                      ready: asyncio.Event | None = None) -> None:
    """Serve the console until cancelled."""
    from aiohttp import web

    from agentgov.console.app import Console
    from agentgov.console.views import sources_from

    settings = console_settings_of(cfg, port, host)
    runner = web.AppRunner(Console(settings, sources_from(cfg)).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    click.echo(f"agentgov console on http://{settings.host}:{settings.port}", err=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve_console(cfg: Config) -> None:
    """The console as a process of its own (`agentgov serve` runs this under its supervisor)."""
    import uvloop

    from agentgov.engine.server import logsafe

    logsafe.configure("console", cfg.log_level)
    uvloop.run(run_console(cfg))


@click.command()
@config_option("agentgov.yaml: identity (who may sign in), audit, budgets and approvals to show.")
@click.option("--port", type=int, help="[console.port]")
@click.option("--host", help="[console.host] (default 127.0.0.1)")
def console(config_path: Path | None, port: int | None, host: str | None) -> None:
    """Serve the web console: decisions, refusals, budgets, approvals, audit and policy."""
    from agentgov.console.app import ConsoleAssetsMissing

    path = config_path or default_config_path()
    if path is None:
        click.echo("config error: no configuration found: give --config FILE (or AGENTGOV_CONFIG)", err=True)
        raise SystemExit(EXIT_ERROR)
    cfg = resolved(path)
    try:
        asyncio.run(run_console(cfg, port, host))
    except KeyboardInterrupt:
        pass
    except ConsoleConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    except (ConsoleAssetsMissing, OSError) as exc:
        click.echo(f"console: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
