"""The `agentgov` command. Exit codes (contract): 0 success, 1 usage/load/compile error, 2 test failures."""

from __future__ import annotations

import click

from agentgov import __version__
from agentgov.cli.api_key import api_key
from agentgov.cli.check import check
from agentgov.cli.demo import demo
from agentgov.cli.envoy_config import envoy_config
from agentgov.cli.evaluate import eval_command
from agentgov.cli.fmt import fmt
from agentgov.cli.policy_test import test
from agentgov.cli.serve import serve
from agentgov.cli.up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentgov")
def cli() -> None:
    """agentgov: policy-as-code governance for AI agents (LLM calls and MCP tool calls)."""


for command in (check, eval_command, test, fmt, demo, serve, envoy_config, up, api_key):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="agentgov")


if __name__ == "__main__":
    main()
