"""agentgov benchmark: where the time of one decision goes, from the engine up to Envoy.

Writes docs/benchmarks.md (a table) and docs/benchmarks.png (a plot). Run with `make bench`.
Figures are for the machine that ran it (printed in the report); tests never assert timings.

Layers, each including the one before:
  engine      RegoBackend / CedarBackend evaluate on one policy input (no I/O)
  governor    Governor.decide: JWT check (cached) + MCP/LLM parse + policy
  ext_authz   one Check over gRPC to an in-process worker (loopback; the Python gRPC client shares
              the event loop and the cores, so this row includes the client's cost too)
  decide      one agentgov.v1 Decide over gRPC (loopback, same caveat)
  envoy       one HTTP request through the real Envoy → agentgov → demo backend

and, for the PII hook: precision/recall per type on the labelled development set
(tests/data/pii), scan cost per KB of text, and the whole hook on a 2 KB MCP tool call.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DemoKeys, LocalStack, free_port  # noqa: E402
from agentgov.engine.backends.envoy_result import decision_from_envoy_result  # noqa: E402
from agentgov.engine.backends.rego import RegoBackend  # noqa: E402
from agentgov.engine.config import Config, build_hooks  # noqa: E402
from agentgov.engine.hooks.base import HookRequest  # noqa: E402
from agentgov.engine.hooks.identity import IdentityVerifier, Issuer  # noqa: E402
from agentgov.engine.hooks.pii.hook import PiiHook  # noqa: E402
from agentgov.engine.model import ANONYMOUS  # noqa: E402
from agentgov.engine.pipeline import Envelope, Governor  # noqa: E402
from agentgov.engine.policy.discovery import discover  # noqa: E402
from agentgov.engine.policy.library import build_backends  # noqa: E402
from agentgov.engine.proto import DECIDE  # noqa: E402
from agentgov.engine.proto import decision_pb2 as pb  # noqa: E402
from agentgov.engine.protocols.mcp import parse_mcp  # noqa: E402
from agentgov.engine.server.app import WorkerConfig, run_worker  # noqa: E402

POLICIES = REPO / "policies"
LAYERS_START, LAYERS_END = "<!-- layers:start -->", "<!-- layers:end -->"
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "query": "open deals"}}}
OPA_ENVOY_POLICY = """package envoy.authz
import rego.v1
default allow := false
allow if {
  input.parsed_path == ["people"]
  input.attributes.request.http.method == "GET"
}
"""


@dataclass
class Row:
    layer: str
    case: str
    n: int
    p50_us: float
    p99_us: float
    mean_us: float
    per_s: float  # decisions per second (sequential, or at the given concurrency for throughput rows)


def summarize(layer: str, case: str, samples_ns: list[int], per_s: float | None = None) -> Row:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    mean = statistics.fmean(ordered) / 1000
    return Row(layer, case, len(ordered), p50, p99, mean, per_s if per_s is not None else 1e6 / mean)


async def atimed(fn: Callable[[], Awaitable[Any]], n: int) -> list[int]:
    for _ in range(min(100, n)):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        await fn()
        out.append(time.perf_counter_ns() - t)
    return out


def policy_input(roles: list[str], tool: str) -> dict[str, Any]:
    return {"subject": {"id": "alice", "roles": roles, "tenant": "acme", "claims": {}, "authenticated": True},
            "action": {"kind": "tool.call", "name": tool}, "resource": {"type": "tool", "id": tool, "server": "crm"},
            "arguments": {"tenant_id": "acme", "query": "open deals"}, "pii": {"findings": [], "types": [], "secrets": []},
            "budget": {}, "context": {"time": "2026-11-22T10:00:00Z", "request_id": "r1", "source_ip": "10.0.0.1"},
            "http": {"method": "POST", "path": "/mcp", "host": "crm", "headers": {}}}


def bench_engines(n: int) -> list[Row]:
    backends = build_backends(discover([POLICIES]))
    rows = []
    for engine in ("rego", "cedar"):
        backend = backends[engine]
        for case, doc in (("allow tool.call", policy_input(["analyst"], "crm.query")),
                          ("deny tool.call", policy_input(["developer"], "crm.query"))):
            samples = asyncio.run(atimed(lambda b=backend, d=doc: b.evaluate(d), n))
            rows.append(summarize(f"engine ({engine})", case, samples))
    compat = RegoBackend([("envoy.rego", OPA_ENVOY_POLICY)], rule="data.envoy.authz.allow",
                         reader=decision_from_envoy_result)
    doc = {"attributes": {"request": {"http": {"method": "GET", "path": "/people"}}}, "parsed_path": ["people"]}
    rows.append(summarize("engine (rego)", "OPA-Envoy policy", asyncio.run(atimed(lambda: compat.evaluate(doc), n))))
    return rows


def governor(workdir: Path, keys: DemoKeys, engine: str = "rego") -> Governor:
    (workdir / "jwks.json").write_text(json.dumps(keys.jwks()))
    identity = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(workdir / "jwks.json"))])
    # The default hooks (pii, tools_list), as `agentgov serve` runs them.
    return Governor(build_backends(discover([POLICIES]))[engine], identity, hooks=build_hooks(Config(base=REPO)))


PROSE = ("The quarterly review covers churn in the enterprise segment, the onboarding backlog and the "
         "migration of the reporting pipeline. Customer escalations rose in October; most concern invoice "
         "disputes and delayed exports. Please summarise the open deals for account 4471 and draft a reply "
         "to the customer, who asked about renewal terms, volume discounts and the SLA for priority support. ")


def prose(size: int) -> str:
    """Ordinary business text of about `size` bytes with two findings at the end."""
    tail = " Contact jane.doe@acme-corp.io or +1 202 927 0711."
    return (PROSE * (size // len(PROSE) + 1))[:size - len(tail)] + tail


@dataclass
class PiiReport:
    accuracy: dict[str, Any]
    per_kb: list[tuple[str, float]]  # (text, median ms per KB)
    hook_rows: list[Row]


def bench_pii(n: int) -> PiiReport:
    sys.path.insert(0, str(REPO / "bench"))
    from pii_eval import evaluate  # the same scorer docs/pii.md and the tests use

    hook = PiiHook()
    scanner = hook.scanner
    corpus = sorted((REPO / "tests" / "data" / "pii").glob("*.jsonl"))
    accuracy = evaluate(corpus)
    per_kb: list[tuple[str, float]] = []
    dev_texts = [json.loads(line)["text"] for path in corpus for line in path.read_text().splitlines() if line]
    for label, texts in (("2 KB business text, 2 findings", [prose(2048)]), ("16 KB business text, 2 findings",
                                                                          [prose(16384)]),
                         ("dev set texts (dense: most lines hold PII)", dev_texts)):
        costs = []
        for text in texts:
            kb = len(text.encode()) / 1024
            for _ in range(max(3, n // (10 * len(texts)))):
                t = time.perf_counter_ns()
                scanner.scan(text)
                costs.append((time.perf_counter_ns() - t) / 1e6 / kb)
        per_kb.append((label, statistics.median(costs)))
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "crm.query", "arguments": {
        "tenant_id": "acme", "query": prose(1000), "notes": prose(900)}}}
    body = json.dumps(call).encode()

    async def whole_hook() -> None:
        actions = parse_mcp(body, "crm")
        await hook.before(HookRequest("d", "bench", "POST", "/crm/mcp", "crm", {}, ANONYMOUS, tuple(actions)))

    rows = [summarize("pii hook", f"parse + scan + findings, {len(body) / 1024:.1f} KB MCP tools/call",
                      asyncio.run(atimed(whole_hook, n)))]
    return PiiReport(accuracy, per_kb, rows)


def bench_governor(n: int, workdir: Path, keys: DemoKeys) -> list[Row]:
    rows = []
    token = keys.token("alice", ["analyst"], "acme")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    mcp = Envelope("POST", "/crm/mcp", "crm", headers, json.dumps(CALL).encode())
    chat = Envelope("POST", "/v1/chat/completions", "llm", headers, json.dumps(
        {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hello " * 50}]}).encode())
    for engine in ("rego", "cedar"):
        gov = governor(workdir, keys, engine)
        for case, env in (("MCP tools/call", mcp), ("OpenAI chat", chat)):
            samples = asyncio.run(atimed(lambda e=env, g=gov: g.decide(e), n))
            rows.append(summarize(f"governor ({engine})", case, samples))
    return rows


def bench_grpc(n: int, workdir: Path, keys: DemoKeys) -> list[Row]:
    token = keys.token("alice", ["analyst"], "acme")
    port = free_port()

    async def scenario() -> list[Row]:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(governor(workdir, keys), WorkerConfig("127.0.0.1", port, drain_s=0.1),
                                              ready, stop))
        await ready.wait()
        check = authz.CheckRequest()
        http = check.attributes.request.http
        http.method, http.path, http.host = "POST", "/crm/mcp", "crm"
        http.headers["authorization"] = f"Bearer {token}"
        http.headers["content-type"] = "application/json"
        http.raw_body = json.dumps(CALL).encode()
        decide_request = pb.DecideRequest(action=pb.ActionRequest(
            credential=token, kind="tool.call", name="crm.query", arguments_json=json.dumps({"tenant_id": "acme"})))
        floor_port = free_port()
        floor = grpc.aio.server()
        authz_grpc.add_AuthorizationServicer_to_server(_EmptyAuthorization(), floor)
        floor.add_insecure_port(f"127.0.0.1:{floor_port}")
        await floor.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{floor_port}") as channel:
            empty = authz_grpc.AuthorizationStub(channel)
            floor_row = summarize("gRPC floor", "empty Check, no decision", await atimed(lambda: empty.Check(check), n))
        await floor.stop(0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = authz_grpc.AuthorizationStub(channel)
            decide = channel.unary_unary(DECIDE, request_serializer=pb.DecideRequest.SerializeToString,
                                         response_deserializer=pb.DecideResponse.FromString)
            rows = [floor_row,
                    summarize("ext_authz gRPC", "Check, MCP tools/call", await atimed(lambda: stub.Check(check), n)),
                    summarize("decision service", "Decide, ActionRequest",
                              await atimed(lambda: decide(decide_request), n))]
        stop.set()
        await task
        return rows

    return asyncio.run(scenario())


class _EmptyAuthorization(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers every Check with an empty response: what Python gRPC costs before any decision."""

    async def Check(self, request: authz.CheckRequest, context: Any) -> authz.CheckResponse:
        return authz.CheckResponse()


async def _sequential(url: str, headers: dict[str, str], body: bytes, n: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        async def one() -> None:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
        return await atimed(one, n)


async def _load(url: str, headers: dict[str, str], body: bytes, seconds: float, concurrency: int) -> tuple[int, float]:
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"unexpected status {r.status}")
                    done += 1
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.monotonic() - started


def bench_envoy(n: int, seconds: float, concurrency: int) -> list[Row]:
    rows = []
    audit_dir = Path(tempfile.mkdtemp(prefix="agentgov-bench-audit-"))
    configurations: list[tuple[str, int, dict[str, Any]]] = [
        ("1 worker", 1, {}),
        ("1 worker, durable audit", 1, {"audit": {"dir": str(audit_dir)}}),
        ("2 workers", 2, {}),
    ]
    for label, workers, extra in configurations:
        stack = LocalStack(policies=POLICIES, workers=workers, config_extra=extra)
        try:
            stack.start()
            token = stack.keys.token("alice", ["analyst"], "acme")
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            body = json.dumps(CALL).encode()

            rows.append(summarize(f"Envoy e2e ({label})", "sequential, MCP tools/call",
                                  asyncio.run(_sequential(stack.url + "/mcp", headers, body, n))))
            count, elapsed = asyncio.run(_load(stack.url + "/mcp", headers, body, seconds, concurrency))
            rows.append(Row(f"Envoy e2e ({label})", f"throughput, {concurrency} concurrent", count, float("nan"),
                            float("nan"), float("nan"), count / elapsed))
        finally:
            stack.stop()
    shutil.rmtree(audit_dir, ignore_errors=True)
    return rows


def bench_budget(n: int, workdir: Path) -> list[Row]:
    """The budget hook alone, per decision: reserve (before) and confirm (after), against SQLite and,
    when redis-server is installed, a Redis on loopback started for the run."""
    from agentgov.engine.hooks.budget.hook import BudgetHook, open_store
    from agentgov.engine.hooks.budget.limits import settings_from_config
    from agentgov.engine.model import Decision, Subject

    doc = {"limits": [{"name": "per-subject", "key": "subject", "window": "1h", "requests": 10**9},
                      {"name": "per-tenant-tokens", "key": "tenant+model", "window": "day", "tokens": 10**12}]}
    subject = Subject("alice", ("analyst",), "acme", {}, True)
    actions = tuple(parse_mcp(json.dumps(CALL).encode(), "crm"))
    rows = []
    stores: list[tuple[str, str, Any]] = [("sqlite", "sqlite", None)]
    redis = shutil.which("redis-server")
    if redis:
        port = free_port()
        proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        stores.append(("redis", f"redis://127.0.0.1:{port}/0", proc))
    for label, url, proc in stores:
        settings = settings_from_config({**doc, "store": url})
        hook = BudgetHook(settings, open_store(settings, workdir), settled_by_responses=False)
        counter = iter(range(10**9))

        async def one(h: BudgetHook = hook, ids: Any = counter) -> None:
            request = HookRequest(f"bench-{next(ids)}", "bench", "POST", "/mcp", "crm", {}, subject, actions)
            enrichment = await h.before(request)
            budget = getattr(enrichment, "budget", None)
            if not budget:
                raise RuntimeError(f"the budget hook did not reserve: {enrichment}")
            extensions = {"_budget": budget}
            await h.after(dataclasses.replace(request, extensions=extensions), Decision(allow=True))

        async def run(h: BudgetHook = hook) -> list[int]:
            try:
                return await atimed(one, n)
            finally:
                await h.close()

        rows.append(summarize("budget hook", f"reserve (+ release on deny), {label}", asyncio.run(run())))
        if proc is not None:
            proc.terminate()
            proc.wait()
    return rows


def pii_section(report: PiiReport) -> list[str]:
    lines = ["", "## PII and secrets", "",
             "Precision and recall per type on the labelled development set (`tests/data/pii`, scored by "
             "`bench/pii_eval.py`; STRIPE_KEY, AWS_SECRET_KEY and URL_CREDENTIALS findings count as the set's "
             "GENERIC_SECRET label):", "",
             "| type | true pos. | false pos. | missed | precision | recall |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in report.accuracy["types"].items():
        lines.append(f"| {label} | {r['tp']} | {r['fp']} | {r['fn']} | {r['precision']:.3f} | {r['recall']:.3f} |")
    lines += ["", "Scan cost (median over runs, all detectors on):", "", "| text | ms per KB |", "| --- | ---: |"]
    lines += [f"| {label} | {cost:.3f} |" for label, cost in report.per_kb]
    lines += ["", "The `pii hook` row in the table above is the whole before-hook on a ~2 KB MCP tool call: "
              "JSON-RPC parsing, extraction of every argument string with its path, the scan, and the findings."]
    return lines


def write_report(rows: list[Row], out: Path, args: argparse.Namespace, pii: PiiReport | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = [r for r in rows if r.p50_us == r.p50_us]  # not NaN
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(latency) + 1.5))
    labels = [f"{r.layer}: {r.case}" for r in latency]
    ys = range(len(latency))
    ax.barh(ys, [r.p50_us for r in latency], color="#4c72b0", label="p50")
    ax.scatter([r.p99_us for r in latency], ys, color="#c44e52", zorder=3, label="p99", marker="|", s=200)
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency per decision (µs, log scale)")
    ax.set_title("agentgov: time per decision, by layer")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "benchmarks.png", dpi=110)

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    lines = [
        LAYERS_START,
        "## By layer: where the time of one decision goes",
        "",
        "Generated by `make bench` (`bench/run.py`); numbers are for the machine below and change with it.",
        "Tests never assert timings; this page is where speed is measured.",
        "",
        f"- machine: {os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {platform.system()}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.n} timed iterations per latency row; "
        f"throughput rows run {args.seconds:.0f} s at {args.concurrency} concurrent clients",
        "- Envoy rows share the cores with the load generator, Envoy and the demo backend, so they understate "
        "what agentgov does on its own cores.",
        "",
        "| layer | case | n | p50 (µs) | p99 (µs) | mean (µs) | decisions/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        def fmt(v: float) -> str:
            return "n/a" if v != v else f"{v:,.1f}"
        lines.append(f"| {r.layer} | {r.case} | {r.n} | {fmt(r.p50_us)} | {fmt(r.p99_us)} | {fmt(r.mean_us)} | "
                     f"{r.per_s:,.0f} |")
    lines += ["", "![time per decision by layer](benchmarks.png)", "",
              "What the layers add: `governor` over `engine` is identity (a cached JWT check), protocol parsing, "
              "the default hooks (the PII/secrets scan of every prompt and argument; `pii hook` is that hook alone on "
              "a larger call) and the input document; `ext_authz gRPC` adds protobuf and loopback gRPC, whose own "
              "cost in Python (client and server on one event loop) is the `gRPC floor` row; `Envoy e2e` adds "
              "Envoy, HTTP and the demo backend, all on the same two cores as the load generator.", "",
              "Where the time goes: the policy evaluation (the shipped library's `data.agentgov.decision` in "
              "regorus, or the Cedar policy set) and Python gRPC are the two large pieces; identity with a cached "
              "token and protocol parsing are tens of microseconds. A plain OPA-Envoy style policy evaluates in about a "
              "tenth of the library's time. On a two-core machine a second worker adds no throughput, because the "
              "load generator, Envoy and the demo backend already take the cores; the worker model (one process per "
              "core, each its own Envoy endpoint) is for machines with cores to spare, which this run cannot show.",
              ""]
    if pii is not None:
        lines += pii_section(pii)
    lines.append(LAYERS_END)
    section = "\n".join(lines)
    path = out / "benchmarks.md"
    path.write_text(merge_section(path.read_text() if path.exists() else "# Benchmarks\n", section))


def merge_section(previous: str, section: str) -> str:
    """`previous` with this script's section replaced: the other scripts' sections and the
    hand-written before/after history around them stay as they are."""
    if LAYERS_START in previous and LAYERS_END in previous:
        head, rest = previous.split(LAYERS_START, 1)
        return head + section + rest.split(LAYERS_END, 1)[1]
    heading = "## By layer: where the time of one decision goes"
    if heading in previous:  # a page written before the markers: up to the next generated section
        head, rest = previous.split(heading, 1)
        tail = rest[rest.index("<!--"):] if "<!--" in rest else ""
        return head + section + "\n\n" + tail
    return previous.rstrip() + "\n\n" + section + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="timed iterations per latency row")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--skip-envoy", action="store_true")
    args = parser.parse_args()
    keys = DemoKeys()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pii = bench_pii(args.n)
        rows = bench_engines(args.n) + pii.hook_rows + bench_budget(args.n, workdir) + \
            bench_governor(args.n, workdir, keys) + bench_grpc(args.n, workdir, keys)
    if not args.skip_envoy:
        rows += bench_envoy(max(200, args.n // 4), args.seconds, args.concurrency)
    for r in rows:
        print(f"{r.layer:28} {r.case:32} p50 {r.p50_us:9.1f} µs  p99 {r.p99_us:9.1f} µs  {r.per_s:10,.0f}/s")
    for label, cost in pii.per_kb:
        print(f"pii scan {label:48} {cost:.3f} ms/KB")
    write_report(rows, args.out, args, pii)
    print(f"wrote {args.out / 'benchmarks.md'} and {args.out / 'benchmarks.png'}")


if __name__ == "__main__":
    main()
