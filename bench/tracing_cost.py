"""What OpenTelemetry tracing costs a decision: `Governor.decide` on one MCP tool call with JWT
identity, the shipped Rego library and the PII hook, with tracing off, at 10% and at 100% sampling,
spans exported over OTLP/HTTP to a real receiver on loopback (in the background, as in a worker).

Run by `make bench`; prints a table and writes the `tracing` section of docs/benchmarks.md.
Figures are for the machine that ran it; tests never assert timings."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DemoKeys  # noqa: E402
from agentgov.engine.config import Config, build_hooks  # noqa: E402
from agentgov.engine.hooks.identity import IdentityVerifier, Issuer  # noqa: E402
from agentgov.engine.pipeline import Envelope, Governor, GovernorOptions  # noqa: E402
from agentgov.engine.policy.discovery import discover  # noqa: E402
from agentgov.engine.policy.library import build_backends  # noqa: E402
from agentgov.engine.telemetry.tracing import TracingSettings  # noqa: E402
from tests.test_tracing import OtlpReceiver  # noqa: E402

POLICIES = REPO / "policies"
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "query": "open deals"}}}


def _governor(workdir: Path, keys: DemoKeys, tracing: TracingSettings | None) -> Governor:
    (workdir / "jwks.json").write_text(json.dumps(keys.jwks()))
    identity = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(workdir / "jwks.json"))])
    return Governor(build_backends(discover([POLICIES]))["rego"], identity, GovernorOptions(tracing=tracing),
                    hooks=build_hooks(Config(base=REPO)))


async def _rate(governor: Governor, env: Envelope, seconds: float) -> float:
    await governor.start()
    for _ in range(200):  # warm up
        await governor.decide(env)
    done, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(50):
            await governor.decide(env)
        done += 50
    rate = done / (time.perf_counter() - started)
    await governor.close()
    return rate


def main(seconds: float = 4.0, runs: int = 3) -> list[tuple[str, float]]:
    keys = DemoKeys()
    receiver = OtlpReceiver()
    env = Envelope(method="POST", path="/mcp", host="demo",
                   headers={"authorization": f"Bearer {keys.token('alice', ['analyst'], 'acme')}",
                            "content-type": "application/json"},
                   body=json.dumps(CALL).encode())
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for label, ratio in (("off", None), ("10% sampled", 0.1), ("100% sampled", 1.0)):
                settings = None if ratio is None else TracingSettings(receiver.url, sample_ratio=ratio)
                rates = [asyncio.run(_rate(_governor(Path(folder), keys, settings), env, seconds))
                         for _ in range(runs)]
                rows.append((label, statistics.median(rates)))
    finally:
        receiver.close()
    return rows


def report(rows: list[tuple[str, float]]) -> str:
    base = rows[0][1]
    lines = ["<!-- tracing:start -->", "## Tracing cost", "",
             f"`bench/tracing_cost.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): `Governor.decide` on an "
             "MCP tool call (JWT, shipped Rego library, PII hook), in process, median of three 4-second runs, spans "
             "exported in the background to an OTLP/HTTP receiver on loopback.", "",
             "| tracing | decisions/s | vs off |", "| --- | ---: | ---: |"]
    lines += [f"| {label} | {rate:,.0f} | {rate / base - 1:+.1%} |" for label, rate in rows]
    lines += ["", "<!-- tracing:end -->"]
    return "\n".join(lines)


if __name__ == "__main__":
    results = main()
    text = report(results)
    print(text)
    doc = REPO / "docs" / "benchmarks.md"
    current = doc.read_text()
    if "<!-- tracing:start -->" in current:
        current = re.sub(r"<!-- tracing:start -->.*?<!-- tracing:end -->", lambda _: text, current, flags=re.DOTALL)
    else:
        current = current.replace("## By layer: where the time of one decision goes",
                                  text + "\n\n## By layer: where the time of one decision goes", 1)
    doc.write_text(current)
