"""`agentgov test [PATH…]`: Rego unit tests and YAML decision cases through every engine."""

from __future__ import annotations

from pathlib import Path

import click

from agentgov.cli.configured import config_option, resolved
from agentgov.cli.output import EXIT_ERROR, EXIT_FAILED, report_problems
from agentgov.engine.policy.library import default_policy_path
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.testing.cases import INPUT_FORMATS
from agentgov.engine.testing.report import render_json, render_junit, render_junit_load_error, render_pretty
from agentgov.engine.testing.suite import run_suite


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-r", "--run", "pattern", help="Only tests whose name matches this regular expression.")
@click.option("-v", "--verbose", is_flag=True, help="List passing tests too.")
@click.option("--format", "fmt", type=click.Choice(["pretty", "json", "junit"]), default="pretty", show_default=True)
@click.option("--coverage", is_flag=True, help="Report Rego line and Cedar policy coverage.")
@click.option("--threshold", type=click.FloatRange(0, 100), default=None,
              help="With --coverage: fail (exit 2) below this percentage.")
@click.option("--allow-empty", is_flag=True, help="Running zero tests is not an error.")
@click.option("--rule", default=None, help="Rego decision rule for case files without their own `rule:` "
              "[default: data.agentgov.decision; data.envoy.authz.allow with --input-format opa-envoy].")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default=None,
              help="How case requests are read, for files without their own `input_format:` [default: agentgov].")
@config_option("Test the policies this agentgov.yaml serves (policy.paths, rule, input format); flags win.")
def test(paths: tuple[str, ...], pattern: str | None, verbose: bool, fmt: str, coverage: bool,
         threshold: float | None, allow_empty: bool, rule: str | None, input_format: str | None,
         config_path: Path | None) -> None:
    """Run policy tests (default: ./policies, else the shipped library). Exit 0 all pass, 2 any failure,
    1 load/compile error (or no tests)."""
    if threshold is not None and not coverage:
        coverage = True
    if config_path is not None:
        cfg = resolved(config_path, {"policy.paths": ("PATHS", list(paths) or None), "policy.rule": ("--rule", rule),
                                     "policy.input_format": ("--input-format", input_format)})
        paths = tuple(str(cfg.base / p) for p in cfg.paths)
        rule, input_format = cfg.rule, cfg.input_format
    input_format = input_format or "agentgov"
    paths = paths or (str(default_policy_path()),)
    try:
        report = run_suite(paths, pattern=pattern, coverage=coverage, rule=rule, input_format=input_format)
    except PolicyLoadError as exc:
        if fmt == "junit":
            click.echo(render_junit_load_error([str(p) for p in exc.problems]))
            report_problems(exc, "pretty")  # and on stderr, for a human reading the job log
        else:
            report_problems(exc, "json" if fmt == "json" else "pretty")
        raise SystemExit(EXIT_ERROR) from None
    except Exception as exc:  # a bad --run regex, an unreadable file: a usage error, said plainly
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    renderers = {"json": render_json, "junit": render_junit}
    click.echo(renderers[fmt](report) if fmt in renderers else render_pretty(report, verbose=verbose))
    if report.ran == 0 and not allow_empty:
        click.echo("error: no tests ran (use --allow-empty to accept)", err=True)
        raise SystemExit(EXIT_ERROR)
    if not report.ok:
        raise SystemExit(EXIT_FAILED)
    if threshold is not None and report.coverage is not None:
        percent = report.coverage.percent()
        if percent is None or percent < threshold:
            shown = "n/a" if percent is None else f"{percent:.1f}%"
            click.echo(f"error: coverage {shown} is below the threshold {threshold:.1f}%", err=True)
            raise SystemExit(EXIT_FAILED)
