"""The `agentgov` command. Exit codes (contract): 0 success, 1 usage/load/compile error, 2 test failures."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from agentgov import __version__
from agentgov.cli.output import EXIT_ERROR

# Every command, loaded only when it runs: `agentgov --help` and a pre-commit `agentgov check` must
# not pay for the servers, stores and sinks other commands import (tests/test_cli_startup.py keeps
# the import set of `--help` small, and this table's summaries equal each command's own).
COMMANDS: dict[str, tuple[str, str, str]] = {  # name: (module under agentgov.cli, attribute, summary)
    "api-key": ("api_key", "api_key",
        'Print a fresh API key (once: it is not stored anywhere) and its identity.api_keys entry.'),
    "approvals": ("approvals", "approvals",
        "Calls the policy allows only once a person approves them (docs/approvals.md)."),
    "audit": ("audit", "audit",
        'The audit log: verify it, read it, query it, export it.'),
    "budget": ("budget", "budget",
        'Budgets and rate limits (docs/budgets.md).'),
    "build": ("bundle", "build",
        'Build an OPA bundle (.tar.gz) from a bundle definition in bundles/ or a policy folder (default: '
        'bundles/agentgov.yaml, else the shipped library).'),
    "check": ("check", "check",
        'Check policies (default: ./policies, else the shipped library): syntax, unsupported builtins (with '
        'rule and line), what real OPA would refuse, Cedar schema validation.'),
    "console": ("console", "console",
        'Serve the web console: decisions, refusals, budgets, approvals, audit and policy.'),
    "config": ("config", "config",
        'agentgov.yaml: its schema, and checking one.'),
    "demo": ("demo", "demo",
        'Show the shipped policy library deciding sample agent requests, in Rego and Cedar.'),
    "diff": ("diff", "diff",
        'Replay inputs through two policy versions and report every changed decision.'),
    "envoy-config": ("envoy_config", "envoy_config",
        'Print a working Envoy bootstrap: ext_authz with request body, fail closed, 503 on error.'),
    "eval": ("evaluate", "eval_command",
        'Evaluate one policy input and print the decision JSON.'),
    "fmt": ("fmt", "fmt",
        'Format Cedar policies in place (Rego: not supported, files are left untouched).'),
    "init": ("init", "init",
        "Write a policy folder that builds on agentgov's library: a starter policy, the library pieces, cases "
        'and a README.'),
    "keygen": ("keygen", "keygen",
        'Make a signing key: for bundles (what OPA verifies) or for audit checkpoints (Ed25519).'),
    "pii": ("pii", "pii",
        'PII and secrets detection.'),
    "pull": ("bundle", "pull",
        'Download a bundle as an OPA agent does (GET, bearer token, If-None-Match), or from an OCI registry '
        '(oci://…).'),
    "push": ("bundle", "push",
        'Upload a bundle to an HTTP bundle server (PUT) or an OCI registry (oci://REGISTRY/REPO:TAG, '
        'credentials from AGENTGOV_OCI_USERNAME/_PASSWORD).'),
    "serve": ("serve", "serve",
        'Run the Envoy external authorizer (ext_authz gRPC) and the decision service.'),
    "shadow": ("shadow", "shadow",
        'Shadow mode: a candidate bundle evaluated on live traffic, never enforced.'),
    "sign": ("bundle", "sign",
        "Sign a bundle: add (or replace) OPA's .signatures.json."),
    "test": ("policy_test", "test",
        'Run policy tests (default: ./policies, else the shipped library).'),
    "token": ("token", "token",
        'Print a bearer token for SUB with ROLEs, signed by the demo issuer of a running `agentgov up` (demo '
        'keys only: no other agentgov trusts them).'),
    "up": ("up", "up",
        'Start a local Envoy + agentgov + demo backend and print curl commands to try.'),
    "verify": ("bundle", "verify",
        "Verify a bundle's signature and every file's digest, then load it as `serve` would."),
}


class AgentgovGroup(click.Group):
    """click exits 2 on a usage error; agentgov's contract gives 2 to test failures and decision
    flips, so a mistyped flag in CI must not read as failing tests: usage errors exit 1.
    Commands are imported when they are looked up (COMMANDS), never all at start-up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"agentgov.cli.{entry[0]}")
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries, without importing every command to ask it."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _shortened(summary, limit)) for name, (_, _, summary) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_ERROR)
        except BrokenPipeError:  # `agentgov … | head`: the reader left, nothing is wrong with us
            sys.stderr.close()
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else 0)


def _shortened(summary: str, limit: int) -> str:
    """`summary` cut at a word to fit `limit` characters, as click shortens a command's help."""
    if len(summary) <= limit:
        return summary
    cut = summary[:max(limit - 3, 1)].rsplit(" ", 1)[0].rstrip(",:;")
    return cut + "..."


@click.group(cls=AgentgovGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentgov")
def cli() -> None:
    """agentgov: policy-as-code governance for AI agents (LLM calls and MCP tool calls)."""


def main() -> None:
    cli(prog_name="agentgov")


if __name__ == "__main__":
    main()
