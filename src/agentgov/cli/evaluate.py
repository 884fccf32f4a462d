"""`agentgov eval PATH --input FILE`: one decision, as JSON, from the chosen engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import yaml

from agentgov.cli.configured import config_option, resolved
from agentgov.cli.output import EXIT_ERROR, report_problems
from agentgov.engine.backends.base import DecisionBackend, ResultReader, decision_from_document
from agentgov.engine.backends.envoy_result import OPA_ENVOY_DEFAULT_RULE, decision_from_envoy_result
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.pipeline import INPUT_FORMATS
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import build_backends
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy_input import normalize_input


@click.command("eval")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--input", "-i", "input_file", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Policy input (JSON or YAML; '-' for stdin). Missing fields get their defaults.")
@click.option("--engine", type=click.Choice(["rego", "cedar", "opa"]), default=None,
              help="Default: rego if the path has Rego policies, else cedar.")
@click.option("--rule", default=None, help=f"Rego decision rule [default: {DEFAULT_RULE}, or "
                                            f"{OPA_ENVOY_DEFAULT_RULE} with --input-format opa-envoy].")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default=None,
              help="opa-envoy: the input is an OPA-Envoy input and the result is read as the plugin reads it.")
@click.option("--opa-url", envvar="AGENTGOV_OPA_URL", help="Remote OPA server for --engine opa.")
@click.option("--explain", is_flag=True, help="Also show which rules/policies produced the decision.")
@config_option("Take the policies, engine, rule and input format from this agentgov.yaml (flags win).")
def eval_command(paths: tuple[str, ...], input_file: str, engine: str | None, rule: str | None, input_format: str | None,
                 opa_url: str | None, explain: bool, config_path: Path | None) -> None:
    """Evaluate one policy input and print the decision JSON."""
    if config_path is not None:
        cfg = resolved(config_path, {"policy.paths": ("PATHS", list(paths) or None), "policy.engine": ("--engine", engine),
                                     "policy.rule": ("--rule", rule), "policy.input_format": ("--input-format", input_format),
                                     "policy.opa_url": ("--opa-url", opa_url)})
        paths = tuple(str(cfg.base / p) for p in cfg.paths)
        engine, rule, input_format, opa_url = cfg.engine, cfg.rule, cfg.input_format, cfg.opa_url
    input_format = input_format or "agentgov"
    compat = input_format == "opa-envoy"
    try:
        raw = click.open_file(input_file).read()
        doc = yaml.safe_load(raw) if not raw.lstrip().startswith("{") else json.loads(raw)
        if compat and not isinstance(doc, dict):
            raise ValueError("an OPA-Envoy input must be an object")
        policy_input = doc if compat else normalize_input(doc)
    except OSError as exc:  # the reason in words, not Python's `[Errno 2] …: 'file'`
        click.echo(f"{input_file}: {(exc.strerror or str(exc)).lower()}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    except (ValueError, yaml.YAMLError) as exc:
        click.echo(f"{input_file}: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    try:
        if compat and engine == "cedar":
            raise click.UsageError("--input-format opa-envoy needs Rego: OPA-Envoy policies are Rego")
        reader: ResultReader = decision_from_envoy_result if compat else decision_from_document
        backend = _backend(paths, engine, rule or (OPA_ENVOY_DEFAULT_RULE if compat else DEFAULT_RULE),
                           opa_url, reader)
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    except click.UsageError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    out = asyncio.run(_run(backend, policy_input, explain))
    click.echo(json.dumps(out, indent=2))


async def _run(backend: DecisionBackend, policy_input: dict[str, Any], explain: bool) -> dict[str, Any]:
    try:
        if explain:
            explanation = await backend.explain(policy_input)
            return {**explanation.decision.to_dict(), "engine": backend.name, "explain": explanation.lines}
        decision = await backend.evaluate(policy_input)
        return {**decision.to_dict(), "engine": backend.name}
    finally:
        await backend.close()


def _backend(paths: tuple[str, ...], engine: str | None, rule: str, opa_url: str | None,
             reader: ResultReader) -> DecisionBackend:
    if engine == "opa":
        if not opa_url:
            raise click.UsageError("--engine opa needs --opa-url (or AGENTGOV_OPA_URL)")
        # Imported here: its HTTP client is a tenth of a second that evaluating local policies never needs.
        from agentgov.engine.backends.opa_remote import RemoteOpaBackend

        return RemoteOpaBackend(opa_url, rule, reader=reader)
    if not paths:
        raise click.UsageError("give the policy PATH(s) to evaluate")
    backends = build_backends(discover([Path(p) for p in paths]), rule=rule, reader=reader)
    if reader is not decision_from_document:
        backends.pop("cedar", None)
    chosen = engine or next(iter(backends), None)
    if chosen is None or chosen not in backends:
        raise click.UsageError(f"no {chosen or 'Rego or Cedar'} policies under {', '.join(paths)}")
    return backends[chosen]
