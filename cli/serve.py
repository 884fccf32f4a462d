"""`agentgov serve`: N worker processes, each an ext_authz server on its own port (base port + i)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import click

from agentgov.cli.output import EXIT_ERROR, report_problems
from agentgov.engine.config import Config, ConfigError, build_governor, load_config
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.server.app import WorkerConfig, run_worker


def _worker(cfg: Config, index: int) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{index} %(name)s %(message)s")
    governor = build_governor(cfg)
    worker = WorkerConfig(host=cfg.host, port=cfg.port + index,
                          metrics_port=cfg.metrics_port + index if cfg.metrics_port else None)
    asyncio.run(run_worker(governor, worker))


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG")
@click.option("--host", envvar="AGENTGOV_HOST")
@click.option("--port", type=int, envvar="AGENTGOV_PORT", help="First worker's port; worker i listens on port+i.")
@click.option("--workers", type=click.IntRange(1, 64), envvar="AGENTGOV_WORKERS")
@click.option("--metrics-port", type=int, envvar="AGENTGOV_METRICS_PORT")
@click.option("--engine", type=click.Choice(["rego", "cedar", "opa"]), envvar="AGENTGOV_ENGINE")
@click.option("--policies", "policy_paths", multiple=True, envvar="AGENTGOV_POLICIES")
def serve(config_path: Path | None, host: str | None, port: int | None, workers: int | None,
          metrics_port: int | None, engine: str | None, policy_paths: tuple[str, ...]) -> None:
    """Run the Envoy external authorizer (ext_authz gRPC) with the configured policies."""
    try:
        cfg = load_config(config_path)
        for key, value in (("host", host), ("port", port), ("workers", workers),
                           ("metrics_port", metrics_port), ("engine", engine)):
            if value is not None:
                setattr(cfg, key, value)
        if workers is None and config_path is None:
            cfg.workers = os.cpu_count() or 1
        if policy_paths:
            cfg.base, cfg.paths = Path.cwd(), list(policy_paths)
        build_governor(cfg)  # fail fast, in the parent, with a readable error
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    if cfg.workers == 1:
        _worker(cfg, 0)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(cfg, i), daemon=False) for i in range(cfg.workers)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for p in procs:
        p.join()
        codes.append(p.exitcode)
    sys.exit(0 if all(c == 0 for c in codes) else 1)
