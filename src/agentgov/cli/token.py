"""`agentgov token`: a JWT from the demo issuer of a running `agentgov up` stack, for any role.

Demo keys only: the key is generated per `up` run, trusted by that stack's agentgov alone, and
removed with it. It is never a way to mint tokens for a real deployment."""

from __future__ import annotations

from pathlib import Path

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.cli.running import DEMO_KEY_FILE, read_running
from agentgov.cli.stack import DemoKeys


@click.command("token")
@click.option("--sub", "subject", required=True, help="The caller's id (the `sub` claim).")
@click.option("--role", "roles", multiple=True, help="A role (repeatable).")
@click.option("--tenant", default="acme", show_default=True)
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 86400), default=3600, show_default=True, help="Seconds.")
@click.option("--stack", "workdir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The stack's working folder (default: the running `agentgov up`).")
def token(subject: str, roles: tuple[str, ...], tenant: str, ttl_s: int, workdir: Path | None) -> None:
    """Print a bearer token for SUB with ROLEs, signed by the demo issuer of a running `agentgov up`
    (demo keys only: no other agentgov trusts them)."""
    if workdir is None:
        running = read_running()
        if running is None:
            click.echo("error: no `agentgov up` is running (start one, or give --stack DIR of one started with --keep)",
                       err=True)
            raise SystemExit(EXIT_ERROR)
        workdir = Path(running["workdir"])
    key = workdir / DEMO_KEY_FILE
    try:
        keys = DemoKeys.load(key)
    except (OSError, ValueError) as exc:
        click.echo(f"error: {key}: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    click.echo(keys.token(subject, list(roles), tenant, ttl_s=ttl_s))
