"""Load for the gateway benchmark: wrk at saturation, and an open-loop fixed-rate generator.

The open-loop generator sends request i at start + i/rate whatever happened to the earlier ones
(each is its own task, on a new connection when every open one is busy) and counts latency from
that dispatch, so a stall shows as latency of every request it delayed: no coordinated omission,
as wrk2 does (wrk2 is not packaged here). It runs in its own
process so its CPU is not the server's:

    python bench/loadgen.py --url http://127.0.0.1:10000/v1/chat/completions --rate 350 \\
        --duration 8 --header 'authorization: Bearer …' --body-file req.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvloop


@dataclass
class Saturation:
    requests_per_s: float
    errors: int
    non_2xx: int
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('AGENTGOV {{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\\n', summary.requests, summary.duration, errors,
    summary.errors.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


# CPUs for the load side (wrk, the open-loop generator): set by the harness when it pins the
# servers to other CPUs, so the two sides do not trade cores run to run.
LOAD_CPUS = os.environ.get("AGENTGOV_BENCH_LOAD_CPUS", "")


def pinned(args: list[str], cpus: str) -> list[str]:
    return ["taskset", "-c", cpus, *args] if cpus else args


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def wrk(url: str, headers: Mapping[str, str], body: bytes, *, seconds: float, connections: int = 16) -> Saturation:
    """wrk with one thread (the cores belong to the servers), `connections` kept busy."""
    script = _WRK_SCRIPT.format(body=_lua_string(body.decode()), headers="\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        done = subprocess.run(pinned(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout",
                                      "5s", "-s", f.name, url], LOAD_CPUS),
                              capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        os.unlink(f.name)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("AGENTGOV ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    doc = json.loads(line[len("AGENTGOV "):])
    return Saturation(doc["requests"] / (doc["duration_us"] / 1e6), doc["errors"], doc["non_2xx"],
                      {k: doc[k] / 1000 for k in ("p50", "p90", "p99", "p999")})


@dataclass
class OpenLoop:
    rate: float
    sent: int
    latencies_ms: list[float]
    errors: int
    non_2xx: int


async def _open_loop(url: str, headers: Mapping[str, str], body: bytes, rate: float, seconds: float,
                     max_connections: int) -> OpenLoop:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n{head}\r\n").encode() + body
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    free = asyncio.Condition()
    latencies: list[float] = []
    counts = {"errors": 0, "non_2xx": 0}

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        async with free:
            while not idle and opened >= max_connections:
                await free.wait()
            if idle:
                return idle.pop()
            opened += 1
        return await asyncio.open_connection(host, port)

    async def release(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        nonlocal opened
        async with free:
            if conn is None:
                opened -= 1
            else:
                idle.append(conn)
            free.notify()

    async def one() -> None:
        # From dispatch: at most ~1 ms after the scheduled time (libuv's timer granularity), and never
        # held back by an earlier request (each is its own task, on its own connection if need be).
        scheduled = time.perf_counter()
        conn = None
        try:
            conn = await connection()
            reader, writer = conn
            writer.write(request)
            status_line = await reader.readline()
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - scheduled) * 1000)
            if not status_line.split(b" ")[1].startswith(b"2"):
                counts["non_2xx"] += 1
            if close:
                writer.close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            counts["errors"] += 1
            if conn is not None:
                conn[1].close()
            conn = None
        await release(conn)

    tasks = []
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return OpenLoop(rate, total, latencies, counts["errors"], counts["non_2xx"])


def open_loop(url: str, headers: Mapping[str, str], body: bytes, *, rate: float, seconds: float,
              max_connections: int = 256) -> OpenLoop:
    """Run the generator in a child process (its CPU is not the servers'); returns its results."""
    with tempfile.TemporaryDirectory() as folder:
        body_file, out = Path(folder) / "body", Path(folder) / "out.json"
        body_file.write_bytes(body)
        args = ["--url", url, "--rate", str(rate), "--duration", str(seconds), "--body-file", str(body_file),
                "--out", str(out), "--max-connections", str(max_connections)]
        for k, v in headers.items():
            args += ["--header", f"{k}: {v}"]
        subprocess.run(pinned([sys.executable, __file__, *args], LOAD_CPUS), check=True, timeout=seconds + 120)
        doc = json.loads(out.read_text())
    return OpenLoop(doc["rate"], doc["sent"], doc["latencies_ms"], doc["errors"], doc["non_2xx"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    result = uvloop.run(_open_loop(args.url, headers, Path(args.body_file).read_bytes(), args.rate, args.duration,
                                   args.max_connections))
    Path(args.out).write_text(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
