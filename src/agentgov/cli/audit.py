"""`agentgov audit`: verify, read, query and export the hash-chained audit log (docs/audit.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agentgov.cli.configured import audit_paths, config_option
from agentgov.cli.keygen import new_key, write_key
from agentgov.cli.output import EXIT_ERROR, EXIT_FAILED
from agentgov.engine.hooks.audit.sinks import ocsf_event, opa_event
from agentgov.engine.hooks.audit.verify import load_verify_key, log_files, read_records, verify
from agentgov.engine.policy.shadow import SHADOW_PHASE


@click.group()
def audit() -> None:
    """The audit log: verify it, read it, query it, export it."""


@audit.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option("Verify the configuration's audit.dir when no PATHS are given.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 key (public, or the private checkpoint key) to authenticate checkpoints.")
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)
def verify_command(paths: tuple[Path, ...], config_path: Path | None, key_file: Path | None, fmt: str) -> None:
    """Exit 0 when every chain is intact; 2 naming the first bad record; 1 when nothing can be read."""
    try:
        key = load_verify_key(key_file) if key_file else None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"--key: {exc}") from None
    report = verify(audit_paths(paths, config_path), key)
    if fmt == "json":
        click.echo(json.dumps({"ok": report.ok, "notes": report.notes, "chains": [
            {"chain": c.chain, "records": c.records, "head": c.head_seq, "checkpoints": c.checkpoints,
             "problem": c.problem} for c in report.chains]}))
    else:
        for c in report.chains:
            state = "ok" if c.problem is None else f"BROKEN: {c.problem}"
            click.echo(f"{c.chain}: {c.records} record(s), {c.checkpoints} checkpoint(s) verified: {state}")
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
    if not report.chains:
        raise SystemExit(EXIT_ERROR)
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


def records_in(paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
    """Every record of the logs under `paths`, chain by chain; unreadable lines are reported, skipped."""
    for files in log_files(paths).values():
        for file, number, raw in read_records(files):
            try:
                yield json.loads(raw)
            except ValueError:
                click.echo(f"{file.name}:{number}: not a record (run `agentgov audit verify`)", err=True)


def _about(record: dict[str, Any], approval_id: str) -> bool:
    approval = record.get("approval") or {}
    return approval_id in (approval.get("id"), *(approval.get("expired") or ()))


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


@audit.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option("Query the configuration's audit.dir when no PATHS are given.")
@click.option("--subject")
@click.option("--tenant")
@click.option("--since", help="ISO 8601 time (inclusive).")
@click.option("--until", help="ISO 8601 time (exclusive).")
@click.option("--decision", type=click.Choice(["allow", "deny"]))
@click.option("--reason", help="Records whose reasons include this one.")
@click.option("--approval", "approval_id", help="The story of one approval: requested, decided, used, expired.")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True)
@click.option("--include-shadow", is_flag=True,
              help="Also shadow-mode flips (phase shadow): what a candidate policy would have decided.")
def query(paths: tuple[Path, ...], config_path: Path | None, subject: str | None, tenant: str | None,
          since: str | None, until: str | None, decision: str | None, reason: str | None, approval_id: str | None,
          fmt: str, include_shadow: bool) -> None:
    """Records matching every filter given, oldest first per chain: JSON lines or a table."""
    paths = audit_paths(paths, config_path)
    start, end = _when(since), _when(until)
    rows = []
    for r in records_in(paths):
        if r.get("phase") == SHADOW_PHASE and not include_shadow:
            continue
        s = r.get("subject") or {}
        at = datetime.fromisoformat(r["time"])
        if (subject and s.get("id") != subject) or (tenant and s.get("tenant") != tenant) or \
                (decision and r.get("allow") != (decision == "allow")) or \
                (reason and reason not in r.get("reasons", [])) or (start and at < start) or (end and at >= end) or \
                (approval_id and not _about(r, approval_id)):
            continue
        rows.append(r)
    if approval_id:  # one story across chains (the workers' and the approvers'), in time order
        rows.sort(key=lambda r: r["time"])
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    click.echo(f"{'time':27} {'decision':8} {'status':6} {'subject':16} {'entry point':16} {'action':28} reasons")
    for r in rows:
        action = ", ".join(f"{a['kind']} {a['name']}" for a in r.get("actions", [])) or "-"
        click.echo(f"{r['time'][:26]:27} {'allow' if r['allow'] else 'deny':8} {r['status']:<6} "
                   f"{(r.get('subject') or {}).get('id', '')[:16]:16} {r.get('entry_point', '')[:16]:16} "
                   f"{json.dumps(action)[1:-1][:28]:28} {','.join(r.get('reasons', []))}")


@audit.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-n", "--lines", "count", type=click.IntRange(0), default=10, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are written (Ctrl-C stops).")
def tail(directory: Path, count: int, follow: bool) -> None:
    """The last records of every chain, as JSON lines; with -f, the new ones as they arrive."""
    seen: dict[Path, int] = {}
    records = list(records_in((directory,)))
    records.sort(key=lambda r: r["time"])
    for r in records[-count:] if count else []:
        click.echo(json.dumps(r, sort_keys=True))
    for files in log_files((directory,)).values():
        for f in files:
            seen[f] = f.stat().st_size
    try:
        while follow:
            time.sleep(0.5)
            for files in log_files((directory,)).values():
                for f in files:
                    size = f.stat().st_size
                    if size > seen.get(f, 0):
                        with f.open("rb") as handle:
                            handle.seek(seen.get(f, 0))
                            data = handle.read(size - seen.get(f, 0))
                        complete = data[:data.rfind(b"\n") + 1]
                        for line in complete.splitlines():
                            click.echo(line.decode())
                        seen[f] = seen.get(f, 0) + len(complete)
    except KeyboardInterrupt:
        pass


@audit.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option("Export the configuration's audit.dir when no PATHS are given.")
@click.option("--format", "fmt", type=click.Choice(["opa", "ocsf"]), default="opa", show_default=True,
              help="opa: OPA decision-log events; ocsf: OCSF API Activity events (JSON lines).")
def export(paths: tuple[Path, ...], config_path: Path | None, fmt: str) -> None:
    """Every decision as an OPA decision-log event or an OCSF event, one JSON object per line
    (shadow-mode flips are not decisions: `agentgov shadow report` reads those)."""
    convert = opa_event if fmt == "opa" else ocsf_event
    for r in records_in(audit_paths(paths, config_path)):
        if r.get("phase") == SHADOW_PHASE:
            continue
        click.echo(json.dumps(convert(r), sort_keys=True))


@audit.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (PEM); the public key goes beside it as .pub.pem.")
def keygen(out: Path) -> None:
    """A new Ed25519 key for signing checkpoints (audit.checkpoint_key_file)."""
    if out.exists():
        click.echo(f"{out} exists; not overwriting a key", err=True)
        raise SystemExit(EXIT_ERROR)
    public = write_key(out, new_key("audit", ""))  # the same as `agentgov keygen --for audit`
    click.echo(f"private key: {out} (keep it with agentgov)\npublic key: {public} (give it to auditors: "
               f"agentgov audit verify DIR --key {public})")
