"""Cost that should grow with the policy, not with traffic: load, check, first decision, a reload's
time and its longest event-loop stall, resident memory and decision latency against the size of the tool catalog
(10 to 20,000 tools), with the catalog as YAML (data.yaml, what people write) and as JSON
(data.json, what `agentgov build` puts in a bundle), on Rego and Cedar.

Each size runs in a fresh process (its memory is its own). Writes the `catalog` section of
docs/benchmarks.md and docs/benchmarks-catalog.png. Nothing here is asserted anywhere.

    .venv/bin/python bench/catalog_scale.py [--sizes 10,100,1000,5000,20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks-catalog.png"
AGENTGOV = str(REPO / ".venv" / "bin" / "agentgov")

# Runs inside a fresh interpreter per size and engine: builds the governor as `serve` does, decides
# one MCP tool call, then reloads the same sources as a bundle reload does (reading them off the
# loop, then `reload_builder`, the reloader's own build) while a ticker on the event loop records the
# longest stall: how long a decision arriving then would have waited.
PROBE = r'''
import asyncio, json, resource, statistics, sys, time
from pathlib import Path
started = time.perf_counter()
from agentgov.engine.config import build_governor, environment, resolve
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.policy_set import reload_builder
config, folder, engine = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cfg = resolve(config, environment())
imported = time.perf_counter()
governor = build_governor(cfg)
built = time.perf_counter()
call = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
        "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
        "arguments": {"tenant_id": "acme", "query": "open deals"}}

async def main():
    first = time.perf_counter()
    verdict = await governor.decide_stated(call)
    first_ms = (time.perf_counter() - first) * 1000
    assert verdict.decision.allow, verdict.decision
    times = []
    for _ in range(300):
        t = time.perf_counter()
        await governor.decide_stated(call)
        times.append((time.perf_counter() - t) * 1e6)
    return first_ms, statistics.median(times)

async def reload():
    t = time.perf_counter()
    sources = await asyncio.to_thread(discover, [folder])
    read = time.perf_counter() - t
    worst, done = 0.0, False

    async def ticker():
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last - 0.001), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t = time.perf_counter()
    await reload_builder(engine, rule=cfg.rule)(sources, "", "", None, str(folder))
    build = time.perf_counter() - t
    done = True
    await task
    return read, build, worst

first_ms, p50_us = asyncio.run(main())
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# What a worker does once it serves (server/app.py): freeze what is loaded, its collector thresholds,
# and no more collector pauses (a reload builds with the collector on).
import gc
from agentgov.engine.gc_pause import serving_started
from agentgov.engine.server.app import GC_THRESHOLDS
gc.collect()
gc.freeze()
gc.set_threshold(*GC_THRESHOLDS)
serving_started()
read_s, build_s, stall_s = asyncio.run(reload())
print(json.dumps({"start_s": built - started, "build_s": built - imported, "first_ms": first_ms, "p50_us": p50_us,
                  "rss_mb": rss_mb, "reload_read_s": read_s, "reload_build_s": build_s, "reload_stall_s": stall_s}))
'''


def make_folder(base: Path, tools: int, fmt: str) -> Path:
    """The shipped library with `tools` more tools in its catalog, as data.yaml or data.json."""
    folder = base / f"policies-{tools}-{fmt}"
    shutil.copytree(REPO / "policies", folder, ignore=shutil.ignore_patterns("tests", "examples"))
    catalog = folder / "agentgov" / "catalog"
    doc = yaml.safe_load((catalog / "data.yaml").read_text())
    for i in range(tools):
        doc["tool"][f"generated.tool{i:05d}"] = {"roles": ["analyst", "support"], "classification": "internal",
                                                 "pii": "redact", "tenant_scoped": True}
    (catalog / "data.yaml").unlink()
    if fmt == "yaml":
        (catalog / "data.yaml").write_text(yaml.safe_dump(doc))
    else:
        (catalog / "data.json").write_text(json.dumps(doc))
    return folder


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stdout}{result.stderr}")
    return time.perf_counter() - started


def probe(base: Path, folder: Path, engine: str) -> dict[str, float]:
    config = base / f"{folder.name}-{engine}.yaml"
    config.write_text(yaml.safe_dump({"policy": {"engine": engine, "paths": [str(folder)]},
                                      "identity": {"required": False}, "pii": {"enabled": False}}))
    result = subprocess.run([sys.executable, "-c", PROBE, str(config), str(folder), engine], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "RUST_BACKTRACE": "0"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    doc: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return doc


def run(sizes: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentgov-catalog-") as tmp:
        base = Path(tmp)
        for tools in sizes:
            for fmt in ("yaml", "json"):
                folder = make_folder(base, tools, fmt)
                size_kb = sum(p.stat().st_size for p in (folder / "agentgov" / "catalog").iterdir()) / 1024
                check_s = statistics.median(timed([AGENTGOV, "check", str(folder)]) for _ in range(2))
                for engine in ("rego", "cedar"):
                    measured = probe(base, folder, engine)
                    rows.append({"tools": tools, "format": fmt, "engine": engine, "catalog_kb": size_kb,
                                 "check_s": check_s, **measured})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| tools | catalog | engine | `agentgov check` | start → ready | first decision | decision p50 | "
           "reload: read (off loop) | reload: build | reload: longest loop stall | resident memory |",
           "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['tools']:,} | {r['format']} ({r['catalog_kb']:,.0f} KB) | {r['engine']} | "
                   f"{r['check_s']:.2f} s | {r['start_s']:.2f} s | {r['first_ms']:.1f} ms | {r['p50_us']:.0f} µs | "
                   f"{r['reload_read_s']:.2f} s | {r['reload_build_s'] * 1000:,.0f} ms | "
                   f"{r['reload_stall_s'] * 1000:,.0f} ms | {r['rss_mb']:.0f} MB |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for fmt in ("yaml", "json"):
        for engine in ("rego", "cedar"):
            sel = [r for r in rows if r["format"] == fmt and r["engine"] == engine]
            xs = [r["tools"] for r in sel]
            label = f"{engine}, {fmt}"
            axes[0].plot(xs, [r["start_s"] for r in sel], marker="o", label=label)
            axes[1].plot(xs, [r["reload_stall_s"] * 1000 for r in sel], marker="o", label=label)
            axes[2].plot(xs, [r["rss_mb"] for r in sel], marker="o", label=label)
    for ax, title in zip(axes, ("start to ready (s)", "reload: longest event-loop stall (ms)", "resident memory (MB)"),
                         strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("tools in the catalog")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    return True


def write(rows: list[dict[str, Any]], plotted: bool) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = (f"<!-- catalog:start -->\n## Policy data size: load, reload and memory against the catalog\n\n"
            f"`bench/catalog_scale.py` ({when}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}): the "
            "shipped library with N generated tools added to its catalog, as YAML and as JSON, each size in a "
            "fresh process. *start → ready*: imports, configuration and the governor built as `serve` builds "
            "it; *first decision*: one MCP tool call through `Governor.decide_stated` (PII off; the "
            "catalog lookup is what grows); *reload*: reading the sources again (off the event loop, as the "
            "bundle reloader does), then the reloader's own build (`reload_builder`: Cedar on a worker "
            "thread; Rego checked and encoded on a worker thread, compiled in a child process, its engines "
            "assembled on the event loop in steps); *longest loop stall*: the longest time the event loop "
            "did not run during the reload (a 1 ms ticker's worst lateness), which is the longest a decision "
            "arriving then would wait; memory: the process's peak resident set (before the reload).\n\n"
            f"{table(rows)}\n\n" + ("![start, reload and memory against catalog size](benchmarks-catalog.png)\n\n"
                                    if plotted else "") + "<!-- catalog:end -->")
    text = DOC.read_text()
    if "<!-- catalog:start -->" in text:
        text = re.sub(r"<!-- catalog:start -->.*?<!-- catalog:end -->", lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,5000,20000")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")])
    write(rows, plot(rows))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
