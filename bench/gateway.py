"""The gateway benchmark: agentgov behind the real Envoy against the floors and the peer, one run.

Every row forwards the same kind of request to the same instant fake upstream (bench/floors.py),
through Envoy with one worker thread (`--concurrency 1`), on this machine:

  floors   Envoy alone; Envoy + a do-nothing Python ext_authz over HTTP; the same over gRPC
  agentgov identity (JWT) + the shipped policy, over each transport, Rego and Cedar; the full
           pipeline (JWT, policy, PII/secrets scan of a ~2 KB MCP tool call, SQLite or Redis
           budget, durable audit)
  peer     LiteLLM's proxy (its own venv) with a master key, a budget and its PII content filter

For each: wrk at saturation (requests/s, and the server CPU from /proc, per process tree: Envoy +
the authorizer, or LiteLLM), then an open-loop fixed-rate generator at 100, 350 and 1000 requests/s
(latency from the scheduled send time). Writes the gateway section of docs/benchmarks.md and
docs/benchmarks-gateway.png. Tests never assert timings: this is where speed is measured.

    python bench/gateway.py [--seconds 8] [--rates 100,350,1000] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import loadgen  # noqa: E402
import profiling  # noqa: E402
from loadgen import OpenLoop, Saturation, open_loop, pinned, wrk  # noqa: E402

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DemoKeys, envoy_binary, free_port  # noqa: E402
from agentgov.engine.server.envoy_bootstrap import EnvoyLayout, bootstrap  # noqa: E402

MARK_START, MARK_END = "<!-- gateway:start -->", "<!-- gateway:end -->"
PROFILE_DIR: Path | None = None  # with --profile: where the py-spy profiles go
SERVER_CPUS = ""  # with --pin: the servers (Envoy, the authorizer, LiteLLM) on these CPUs
LITELLM_VENV = REPO / "bench" / ".litellm-venv"
LITELLM_VERSION = "1.80.5"
CHAT = {"model": "gpt-4o-mini", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Summarise the open deals for the quarterly review."}]}
_TEXT = ("The quarterly review covers pipeline movement, renewals at risk, expansion opportunities and the "
         "forecast for the next two quarters across the enterprise and mid-market segments. ")
MCP_2KB = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "crm.query", "arguments": {
    "tenant_id": "acme", "query": (_TEXT * 12)[:2000]}}}


@dataclass
class Setup:
    name: str
    kind: str  # envoy | floor-http | floor-grpc | agentgov | litellm
    transport: str = "http"
    engine: str = "rego"
    full: bool = False  # the full pipeline: PII scan, budget, durable audit
    budget_store: str = "sqlite"
    group: str = ""
    request: str = ""  # "mcp" (the 2 KB MCP tool call) or "chat"; default: chat, or mcp for the full pipeline
    audit_durability: str = "fsync"  # audit.durability: fsync (the default) or write


@dataclass
class Result:
    setup: Setup
    saturation: Saturation | None = None
    server_cores: float = float("nan")
    open_loops: list[OpenLoop] = field(default_factory=list)
    note: str = ""
    authorizer_rss_mb: float = float("nan")  # resident memory of agentgov's worker after the saturation run
    authorizer_anon_mb: float = float("nan")  # of which anonymous (heap): what each further worker adds; the
    # rest is file-backed (the interpreter and the extension modules' code), shared by every worker on a node

    @property
    def per_core(self) -> float:
        if self.saturation is None or self.server_cores != self.server_cores or self.server_cores <= 0:
            return float("nan")
        return self.saturation.requests_per_s / self.server_cores


SETUPS = [
    Setup("Envoy alone", "envoy", group="floor"),
    Setup("Envoy + do-nothing Python HTTP ext_authz", "floor-http", group="floor"),
    Setup("Envoy + do-nothing Python gRPC ext_authz", "floor-grpc", transport="grpc", group="floor"),
    Setup("agentgov: JWT + Rego library, HTTP", "agentgov", group="agentgov"),
    Setup("agentgov: JWT + Rego library, gRPC", "agentgov", transport="grpc", group="agentgov"),
    Setup("agentgov: JWT + Cedar library, HTTP", "agentgov", engine="cedar", group="agentgov"),
    Setup("agentgov full pipeline: Rego, PII, SQLite budget, audit", "agentgov", full=True, group="full"),
    Setup("agentgov full pipeline: Rego, PII, SQLite budget, audit; chat request", "agentgov", full=True,
          group="full", request="chat"),
    Setup("agentgov full pipeline: Rego, PII, SQLite budget, audit with durability: write", "agentgov", full=True,
          group="full", audit_durability="write"),
    Setup("agentgov full pipeline: Rego, PII, Redis budget, audit", "agentgov", full=True, budget_store="redis",
          group="full"),
    Setup("agentgov full pipeline: Cedar, PII, SQLite budget, audit", "agentgov", engine="cedar", full=True,
          group="full"),
    Setup("LiteLLM proxy: master key, budget, PII filter", "litellm", group="peer"),
]


# --- processes ---------------------------------------------------------------------------------

class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], *, env: dict[str, str] | None = None,
              port: int | None = None, timeout_s: float = 60, cpus: str = "") -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(pinned(args, cpus), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = proc
        if port is not None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.workdir / f'{name}.log').read_text()[-2000:]}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        return proc
                time.sleep(0.05)
            raise RuntimeError(f"{name} did not listen on {port} within {timeout_s} s")
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in tree_pids(pid):
        try:
            raw = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue  # exited since the tree was read
        fields = raw[raw.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (the supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(raw[raw.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of one process (VmRSS, or RssAnon: its anonymous part), in MB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def profile(setup: Setup, pid: int, url: str, headers: dict[str, str], body: bytes, seconds: float) -> None:
    """py-spy samples agentgov's worker under a further saturation run (not the measured one: sampling costs).

    Writes the collapsed stacks and a summary by stage to PROFILE_DIR."""
    assert PROFILE_DIR is not None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workers = [p for p in tree_pids(pid) if p != pid] or [pid]
    slug = "".join(c if c.isalnum() else "-" for c in setup.name.lower()).strip("-")
    raw = PROFILE_DIR / f"{slug}.collapsed"
    sampler = subprocess.Popen([spy, "record", "--pid", str(max(workers, key=rss_mb)), "--format", "raw", "--rate", "250",
                                "--duration", str(round(seconds)), "--nonblocking", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    wrk(url, headers, body, seconds=seconds)
    sampler.wait(seconds + 30)
    if raw.exists():
        (PROFILE_DIR / f"{slug}.txt").write_text(profiling.summary(raw.read_text()))


def machine_busy() -> str:
    load1, load5, _ = os.getloadavg()
    return f"load average {load1:.2f} (1 min), {load5:.2f} (5 min) before the run"


# --- one setup ---------------------------------------------------------------------------------

def _envoy_config(setup: Setup, listen: int, admin: int, upstream: int, grpc_port: int, http_port: int) -> str:
    layout = EnvoyLayout(listen_port=listen, admin_port=admin, backend_host="127.0.0.1", backend_port=upstream,
                         agentgov_host="127.0.0.1", agentgov_ports=(grpc_port,), agentgov_http_ports=(http_port,),
                         transport=setup.transport, check_timeout_s=2.0)
    doc = bootstrap(layout)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if setup.kind == "envoy":
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"]
        doc["static_resources"]["clusters"] = [c for c in doc["static_resources"]["clusters"]
                                               if c["name"] == "backend"]
    if setup.kind.startswith("floor"):
        # The floors answer no health checks: they are plain endpoints.
        for cluster in doc["static_resources"]["clusters"]:
            cluster.pop("health_checks", None)
    return yaml.safe_dump(doc, sort_keys=False)


def _agentgov_config(setup: Setup, workdir: Path, keys: DemoKeys, grpc_port: int, http_port: int,
                     redis_port: int | None) -> Path:
    (workdir / "jwks.json").write_text(json.dumps(keys.jwks()))
    doc: dict[str, Any] = {
        "policy": {"engine": setup.engine, "paths": [str(REPO / "policies")]},
        "identity": {"issuers": [{"issuer": DEMO_ISSUER, "audiences": [DEMO_AUDIENCE], "algorithms": ["RS256"],
                                  "jwks_file": "jwks.json"}]},
        "server": {"host": "127.0.0.1", "port": grpc_port, "http_port": http_port, "workers": 1,
                   "log_level": "warning"},
    }
    if setup.full:
        store = f"redis://127.0.0.1:{redis_port}/0" if setup.budget_store == "redis" else "sqlite"
        doc["budgets"] = {"store": store, "limits": [
            {"name": "bench", "key": "subject", "window": "day", "requests": 1_000_000_000}]}
        doc["audit"] = {"dir": "audit", "durability": setup.audit_durability}
    else:
        doc["pii"] = {"enabled": False}
    path = workdir / "agentgov.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _litellm_config(workdir: Path, upstream: int) -> Path:
    doc = {
        "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream}/v1",
            "api_key": "fake-upstream-key-not-a-secret"}}],
        "general_settings": {"master_key": "sk-bench-master-not-a-secret"},
        "litellm_settings": {"max_budget": 1_000_000, "budget_duration": "30d"},
        "guardrails": [{"guardrail_name": "pii", "litellm_params": {
            "guardrail": "litellm_content_filter", "mode": "pre_call", "default_on": True,
            "patterns": [{"pattern_type": "prebuilt", "pattern_name": name, "action": "MASK"}
                         for name in ("email", "us_ssn", "credit_card")]}}],
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def ensure_litellm() -> Path | None:
    """LiteLLM in its own venv (its dependencies never meet agentgov's); None if it cannot be installed."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"LiteLLM could not be installed: {done.stderr[-800:]}", file=sys.stderr)
            return None
    return LITELLM_VENV / "bin" / "litellm"


def measure(setup: Setup, procs: Processes, workdir: Path, keys: DemoKeys, upstream: int, redis_port: int | None,
            seconds: float, rates: list[float]) -> Result:
    picked: list[int] = []
    while len(picked) < 4:  # free_port() reserves nothing: two picks could be the same port
        port = free_port()
        if port not in picked:
            picked.append(port)
    listen, admin, grpc_port, http_port = picked
    server_pids: list[int] = []
    token = keys.token("alice", ["analyst"], "acme")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    path, body = "/v1/chat/completions", json.dumps(CHAT).encode()
    if setup.request == "mcp" or (setup.full and not setup.request):
        path, body = "/mcp", json.dumps(MCP_2KB).encode()
    url = f"http://127.0.0.1:{listen}{path}"
    if setup.kind == "floor-http":
        server_pids.append(procs.start("authz", [sys.executable, str(REPO / "bench" / "floors.py"), "http-authz",
                                                 "--port", str(http_port)], port=http_port,
                                       cpus=SERVER_CPUS).pid)
    elif setup.kind == "floor-grpc":
        server_pids.append(procs.start("authz", [sys.executable, str(REPO / "bench" / "floors.py"), "grpc-authz",
                                                 "--port", str(grpc_port)], port=grpc_port,
                                       cpus=SERVER_CPUS).pid)
    elif setup.kind == "agentgov":
        config = _agentgov_config(setup, workdir, keys, grpc_port, http_port, redis_port)
        server_pids.append(procs.start("authz", [sys.executable, "-m", "agentgov.cli.main", "serve", "--config",
                                                 str(config)], port=http_port if setup.transport == "http"
                                       else grpc_port, cpus=SERVER_CPUS).pid)
    if setup.kind == "litellm":
        binary = ensure_litellm()
        if binary is None:
            return Result(setup, note="not measured: `litellm[proxy]` could not be installed from PyPI")
        config = _litellm_config(workdir, upstream)
        proc = procs.start("litellm", [str(binary), "--config", str(config), "--port", str(listen), "--num_workers", "2"],
                           port=listen, timeout_s=180, env={"LITELLM_LOG": "ERROR"}, cpus=SERVER_CPUS)
        server_pids.append(proc.pid)
        headers = {"authorization": "Bearer sk-bench-master-not-a-secret", "content-type": "application/json"}
    else:
        (workdir / "envoy.yaml").write_text(_envoy_config(setup, listen, admin, upstream, grpc_port, http_port))
        server_pids.append(procs.start("envoy", [envoy_binary(), "-c", str(workdir / "envoy.yaml"), "--concurrency",
                                                 "1", "--log-level", "error", "--base-id", str(listen)],
                                       port=listen, cpus=SERVER_CPUS).pid)
        _wait_for_answer(url, headers, body)
    try:
        wrk(url, headers, body, seconds=2)  # warm-up: caches, JIT-free but connection pools and GC settle
        cpu0, started = sum(tree_cpu_s(p) for p in server_pids), time.monotonic()
        saturation = wrk(url, headers, body, seconds=seconds)
        cores = (sum(tree_cpu_s(p) for p in server_pids) - cpu0) / (time.monotonic() - started)
        result = Result(setup, saturation, cores)
        if setup.kind == "agentgov":
            # After the saturation run (16 connections): the steady state. The open loop's 1000 req/s
            # overloads some rows, and the queue it builds would count as the worker's memory.
            worker = max(tree_pids(server_pids[0]), key=rss_mb)
            result.authorizer_rss_mb, result.authorizer_anon_mb = rss_mb(worker), rss_mb(worker, "RssAnon")
        for rate in rates:
            result.open_loops.append(open_loop(url, headers, body, rate=rate, seconds=min(seconds, 6)))
        if setup.kind == "agentgov" and PROFILE_DIR is not None:
            profile(setup, server_pids[0], url, headers, body, seconds)
        if saturation.non_2xx or saturation.errors:
            result.note = f"{saturation.non_2xx} non-2xx and {saturation.errors} errors at saturation"
        return result
    finally:
        procs.stop_all()


def _wait_for_answer(url: str, headers: dict[str, str], body: bytes, timeout_s: float = 30) -> None:
    """Envoy listens before its clusters are healthy: wait for a 200 through the whole chain."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers),  # noqa: S310
                                        timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"no 200 through {url}: {last}")


# --- report ------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def report(results: list[Result], args: argparse.Namespace, busy: str, out: Path) -> str:
    by_name = {r.setup.name: r for r in results}
    grpc_floor = by_name["Envoy + do-nothing Python gRPC ext_authz"].per_core
    http_floor = by_name["Envoy + do-nothing Python HTTP ext_authz"].per_core
    envoy = by_name["Envoy alone"]

    def at(result: Result, rate: float) -> OpenLoop | None:
        return next((o for o in result.open_loops if o.rate == rate), None)

    lines = [MARK_START, "## Gateway: agentgov against the floors and the peer", "",
             f"Generated by `make bench` (`bench/gateway.py`), one run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
             f"{busy}. " + (f"Envoy and the authorizer (or LiteLLM) pinned to CPU {SERVER_CPUS}, the load generator and "
             f"the upstream to CPU {loadgen.LOAD_CPUS} (taskset), so the two sides do not trade cores from run to run. "
             if SERVER_CPUS else "") + "Envoy with one worker thread; every row forwards to the same instant fake upstream; "
             f"wrk (1 thread, 16 connections, {args.seconds:.0f} s) at saturation; server CPU is Envoy's and the "
             "authorizer's process trees (LiteLLM's own for its row), read from /proc. This machine is shared: "
             "from run to run the per-core figures move by 10-20%, so compare rows within one run.", "",
             "| configuration | requests/s | server cores | requests/s per server core | x gRPC floor | x HTTP floor | "
             "p50 / p99 at 350 req/s (ms) | p99 added over Envoy alone at 350 (ms) | worker RSS / of it anonymous (MB) | "
             "notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        sat = r.saturation
        loop = at(r, 350)
        base = at(envoy, 350)
        p50, p99 = (_pct(loop.latencies_ms, 50), _pct(loop.latencies_ms, 99)) if loop else (float("nan"),) * 2
        added = p99 - _pct(base.latencies_ms, 99) if loop and base else float("nan")
        lines.append(f"| {r.setup.name} | {_fmt(sat.requests_per_s) if sat else 'n/a'} | {_fmt(r.server_cores, 2)} | "
                     f"{_fmt(r.per_core)} | {_fmt(r.per_core / grpc_floor, 2)} | {_fmt(r.per_core / http_floor, 2)} | "
                     f"{_fmt(p50, 2)} / {_fmt(p99, 2)} | {_fmt(added, 2)} | "
                     f"{_fmt(r.authorizer_rss_mb)} / {_fmt(r.authorizer_anon_mb)} | {r.note} |")
    lines += ["", "Open loop (latency counted from when the generator dispatches each request, on time whatever "
              "earlier ones did; ms):", "",
              "| configuration | rate | sent | p50 | p90 | p99 | p99.9 | errors | non-2xx |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for o in r.open_loops:
            lines.append(f"| {r.setup.name} | {o.rate:.0f} | {o.sent} | {_fmt(_pct(o.latencies_ms, 50), 2)} | "
                         f"{_fmt(_pct(o.latencies_ms, 90), 2)} | {_fmt(_pct(o.latencies_ms, 99), 2)} | "
                         f"{_fmt(_pct(o.latencies_ms, 99.9), 2)} | {o.errors} | {o.non_2xx} |")
    lines += ["", "![p99 latency against request rate](benchmarks-gateway.png)", "", *targets(by_name, grpc_floor),
              MARK_END]
    plot(results, out / "benchmarks-gateway.png")
    return "\n".join(lines) + "\n"


FULL_MCP = "agentgov full pipeline: Rego, PII, SQLite budget, audit"
FULL_CHAT = "agentgov full pipeline: Rego, PII, SQLite budget, audit; chat request"
FULL_WRITE = "agentgov full pipeline: Rego, PII, SQLite budget, audit with durability: write"


def targets(by_name: dict[str, Result], grpc_floor: float) -> list[str]:
    """The issue's targets against this run; what stands in the way of one not met is `OBSTACLES`'."""
    rego = by_name["agentgov: JWT + Rego library, HTTP"]
    cedar = by_name["agentgov: JWT + Cedar library, HTTP"]
    litellm = by_name["LiteLLM proxy: master key, budget, PII filter"]
    http_floor = by_name["Envoy + do-nothing Python HTTP ext_authz"].per_core

    def added(result: Result) -> float:
        envoy350 = next((o for o in by_name["Envoy alone"].open_loops if o.rate == 350), None)
        mine350 = next((o for o in result.open_loops if o.rate == 350), None)
        if mine350 is None or envoy350 is None:
            return float("nan")
        return _pct(mine350.latencies_ms, 99) - _pct(envoy350.latencies_ms, 99)

    full, chat, written = by_name[FULL_MCP], by_name[FULL_CHAT], by_name[FULL_WRITE]
    rows = [
        ("full pipeline ≥ 1.0x the gRPC floor per server core (MCP call)", full.per_core / grpc_floor, 1.0, "x"),
        ("full pipeline ≥ 1.0x the gRPC floor per server core (chat request)", chat.per_core / grpc_floor, 1.0, "x"),
        ("full pipeline p99 added over Envoy alone ≤ 3 ms at 350 req/s (MCP call)", added(full), 3.0, "ms"),
        ("the same with `audit.durability: write` (answers wait for the write, not the fsync)", added(written), 3.0,
         "ms"),
        ("JWT + Rego over HTTP ≥ 0.4x the HTTP floor per server core", rego.per_core / http_floor, 0.4, "x"),
        ("Cedar ≥ 0.8x Rego per server core", cedar.per_core / rego.per_core, 0.8, "x"),
        ("JWT + Rego ≥ 40x LiteLLM's requests per server core", rego.per_core / litellm.per_core, 40.0, "x"),
        ("full pipeline ≥ 15x LiteLLM's requests per server core", full.per_core / litellm.per_core, 15.0, "x"),
        ("worker resident memory with the full pipeline ≤ 80 MB (all of RSS)", full.authorizer_rss_mb, 80.0, "MB"),
    ]
    lines = ["Targets (issue 21), from this run:", "", "| target | measured | met | what stands in the way |",
             "| --- | ---: | --- | --- |"]
    for (label, value, goal, unit), why in zip(rows, OBSTACLES, strict=True):
        at_most = unit in ("ms", "MB")
        met = "n/a" if value != value else ("yes" if (value <= goal if at_most else value >= goal) else "no")
        lines.append(f"| {label} | {_fmt(value, 2)} {unit} | {met} | {why if met == 'no' else ''} |")
    return [*lines, ""]


# What the profiles (`--profile`: py-spy under wrk, summarised by stage) showed stands between a target
# and this machine's numbers; printed only for a target the run did not meet.
_FULL_OBSTACLE = (
    "on one core the full pipeline is Python per decision. The profile (`--profile`, summarised below the "
    "table; 2026-12-04, third round) has uvloop and the interpreter at ~21% of the active samples, the runner "
    "and its stages ~11%, the policy call ~9%, the transport ~6%, the audit record ~5%, the hand-offs to the "
    "budget and audit threads ~4%, the budget hook ~3.5% and the PII scan ~1.7% on the event loop. The SQLite "
    "batches and the audit writes run on threads of their own (about 4.5 decisions per hand-off at "
    "saturation), but their Python takes the interpreter lock on the same core. No one stage would close the "
    "gap: the gRPC floor does nothing per check.")
OBSTACLES = (
    _FULL_OBSTACLE,
    _FULL_OBSTACLE,
    "the disk: every answer waits until its audit record is fsynced. In process at 350 req/s (no Envoy), the "
    "audit write + fsync takes 0.26 ms at the median, but this VM's shared disk stalls an fsync now and then for "
    "17-115 ms, and the decisions waiting on it (and those queued behind it) make the p99: after.audit p99 9-11 ms, "
    "decide() p99 11-13 ms. The next row answers once the record is written (fsynced behind): in process "
    "decide() p99 2.9 ms, after.audit p99 0.6 ms. The stalls come and go: runs on quieter moments meet it.",
    "the budget's store round trip and the hand-offs to the writer threads remain; see the row above.",
    "Envoy's own HTTP ext_authz call costs ~40% of the HTTP floor; regorus and the Python per check (parsing, the "
    "input document, the answer) the rest. The floor itself moves against everything else from one machine to "
    "the next: the do-nothing HTTP authorizer ran 2.9x the gRPC floor on the machine of 2026-12-04's first runs "
    "(agentgov 0.44x, met) and 3.9x on the third round's, where the same code measured 0.37x.",
    "the one cedarpy call per decision costs ~105 us in process: Cedar's own work ~70 us (it builds the request "
    "and its context from JSON on every call, ~35 us by its metrics, and evaluates in ~30 us) plus ~35 us in "
    "cedarpy's Python wrapper (JSON out and back), where regorus runs a compiled program on an input in ~40 us. "
    "The context is cut down to the attributes the policies name and the principal's entities are kept per "
    "caller (2026-12-04, second round), which took a Cedar decision from ~400 to ~325 us of CPU in process "
    "(Rego ~200 us). Within one machine the ratio sits at the target: 0.77-0.81x across the day's runs.",
    "40x of this LiteLLM (its regex content filter rather than Presidio, 2 workers) would need agentgov near "
    "the HTTP floor itself.",
    "see the first row.",
    "about 40% of a worker's RSS is file-backed (the interpreter, uvloop, grpcio, cryptography, regorus: shared "
    "by every worker on a node); the anonymous part (the second figure in the table) is what each further worker "
    "adds. Of what a worker imports, Envoy's and gRPC's generated protobuf modules (~12 MB), prometheus_client "
    "(~8 MB) and jsonschema for the configuration (~7 MB) are the largest; aiohttp (~16 MB) is no longer loaded "
    "unless the Data API, an audit sink or a remote bundle needs it. Freed heap goes back to the OS every "
    "`server.memory_trim_s` (the later rows no longer grow to 110-130 MB).",
)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in results:
        if not r.open_loops:
            continue
        rates = [o.rate for o in r.open_loops]
        ax.plot(rates, [_pct(o.latencies_ms, 99) for o in r.open_loops], marker="o", label=r.setup.name,
                linestyle="--" if r.setup.group == "floor" else "-")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("p99 latency (ms, from dispatch)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("p99 latency against request rate (one Envoy worker; servers and load on separate CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_section(section: str, out: Path) -> None:
    """Replace the gateway section of docs/benchmarks.md (or put it after the title)."""
    doc = out / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        text = before + section.rstrip("\n") + rest.split(MARK_END, 1)[1]
    else:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{section}\n{rest.lstrip()}"
    doc.write_text(text)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rates", default="100,350,1000")
    parser.add_argument("--only", default="", help="run only setups whose name contains this")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place everything (by default, on a machine with 2+ CPUs, the servers "
                             "run on the first half of the CPUs and the load generator and the upstream on the rest)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also sample agentgov's worker with py-spy during one more saturation run per row, "
                             "and write collapsed stacks and a summary by stage into this directory")
    args = parser.parse_args()
    global SERVER_CPUS, PROFILE_DIR
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = args.profile
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset"):
        half = len(cpus) // 2
        SERVER_CPUS = ",".join(map(str, cpus[:half]))
        loadgen.LOAD_CPUS = ",".join(map(str, cpus[half:]))
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk; `make bench` installs it)")
    rates = [float(r) for r in args.rates.split(",")]
    busy = machine_busy()
    keys = DemoKeys()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="agentgov-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        upstream = free_port()
        up = Processes(workdir)
        up.start("upstream", [sys.executable, str(REPO / "bench" / "floors.py"), "upstream", "--port", str(upstream)],
                 port=upstream, cpus=loadgen.LOAD_CPUS)
        try:
            with redis_server(workdir) as redis_port:
                for setup in SETUPS:
                    if args.only and args.only not in setup.name:
                        continue
                    if setup.kind == "litellm" and args.skip_litellm:
                        results.append(Result(setup, note="not measured (--skip-litellm)"))
                        continue
                    if setup.budget_store == "redis" and setup.full and redis_port is None:
                        results.append(Result(setup, note="not measured: redis-server is not installed"))
                        continue
                    print(f"measuring {setup.name} …", flush=True)
                    try:
                        result = measure(setup, procs, workdir, keys, upstream, redis_port, args.seconds, rates)
                    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                        result = Result(setup, note=f"not measured: {str(exc).splitlines()[0][:200]}")
                    results.append(result)
                    sat = result.saturation
                    print(f"  {sat.requests_per_s if sat else float('nan'):8.0f} req/s on {result.server_cores:.2f} "
                          f"server cores = {result.per_core:8.0f}/core; " + ", ".join(
                              f"{o.rate:.0f}/s p99 {_pct(o.latencies_ms, 99):.2f} ms" for o in result.open_loops)
                          + f"; worker RSS {result.authorizer_rss_mb:.0f} MB ({result.authorizer_anon_mb:.0f} anon)"
                          + (f"  [{result.note}]" if result.note else ""), flush=True)
        finally:
            up.stop_all()
            procs.stop_all()
    if args.only:
        print(json.dumps([{"name": r.setup.name, "per_core": r.per_core, "note": r.note} for r in results], indent=1))
        return
    write_section(report(results, args, busy, args.out), args.out)
    print(f"wrote the gateway section of {args.out / 'benchmarks.md'} and {args.out / 'benchmarks-gateway.png'}")


if __name__ == "__main__":
    main()
