"""The `agentgov` command. Exit codes (contract): 0 success, 1 usage/load/compile error, 2 test failures."""

from __future__ import annotations

import sys
from typing import Any

import click

from agentgov import __version__
from agentgov.cli.api_key import api_key
from agentgov.cli.audit import audit
from agentgov.cli.budget import budget
from agentgov.cli.bundle import build, pull, push, sign, verify
from agentgov.cli.check import check
from agentgov.cli.config import config
from agentgov.cli.demo import demo
from agentgov.cli.diff import diff
from agentgov.cli.envoy_config import envoy_config
from agentgov.cli.evaluate import eval_command
from agentgov.cli.fmt import fmt
from agentgov.cli.init import init
from agentgov.cli.keygen import keygen
from agentgov.cli.output import EXIT_ERROR
from agentgov.cli.pii import pii
from agentgov.cli.policy_test import test
from agentgov.cli.serve import serve
from agentgov.cli.shadow import shadow
from agentgov.cli.token import token
from agentgov.cli.up import up


class AgentgovGroup(click.Group):
    """click exits 2 on a usage error; agentgov's contract gives 2 to test failures and decision
    flips, so a mistyped flag in CI must not read as failing tests: usage errors exit 1."""

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


@click.group(cls=AgentgovGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentgov")
def cli() -> None:
    """agentgov: policy-as-code governance for AI agents (LLM calls and MCP tool calls)."""


for command in (check, eval_command, test, fmt, demo, serve, envoy_config, up, api_key, pii, audit, budget,
                build, sign, verify, push, pull, diff, shadow, config, init, token, keygen):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="agentgov")


if __name__ == "__main__":
    main()
