"""`agentgov api-key`: make a new API key and the agentgov.yaml entry that stores only its hash."""

from __future__ import annotations

import click
import yaml

from agentgov.engine.hooks.api_keys import digest, new_key


@click.command("api-key")
@click.option("--id", "key_id", required=True, help="The subject this key authenticates as (e.g. svc-reports).")
@click.option("--role", "roles", multiple=True, help="A role for the subject (repeatable).")
@click.option("--tenant", help="The subject's tenant.")
def api_key(key_id: str, roles: tuple[str, ...], tenant: str | None) -> None:
    """Print a fresh API key (once: it is not stored anywhere) and its identity.api_keys entry."""
    key = new_key()
    entry: dict[str, object] = {"id": key_id, "sha256": digest(key)}
    if roles:
        entry["roles"] = list(roles)
    if tenant:
        entry["tenant"] = tenant
    click.echo(f"key (give it to the caller; send as `X-API-Key: <key>` or `Authorization: Bearer <key>`):\n  {key}\n")
    click.echo("add to agentgov.yaml under identity.api_keys:")
    click.echo(yaml.safe_dump([entry], sort_keys=False).rstrip())
