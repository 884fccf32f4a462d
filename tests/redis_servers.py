"""Real Redis for the budget tests: one `redis-server` (Debian package), or a Redis Cluster of three
masters with one replica each made with `redis-cli --cluster create`, all on loopback, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from agentgov.cli.stack import free_port
from tests.support import wait_for

# A marked test credential: the cluster fixture runs with AUTH on, so the store's auth path is real.
TEST_PASSWORD = "test-only-cluster-password"


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (.ci/run installs Debian's redis-server with apt-get)"
    return found


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A real redis-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: _listening(self.port), 10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _cluster_ports(n: int) -> list[int]:
    """`n` ports free now whose cluster-bus ports (port + 10000) are free too, and none of them
    another node's client or bus port (a node at P and one at P - 10000 would both want P)."""
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < n:
        port = free_port()
        if port + 10000 > 65535 or port in taken or port + 10000 in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
        taken.update((port, port + 10000))
    return ports


class RedisClusterServers:
    """Six redis-server processes in cluster mode (three masters, one replica each), on loopback.
    A short node timeout so that a killed master's replica is promoted within seconds."""

    def __init__(self, workdir: Path, node_timeout_ms: int = 1000) -> None:
        self.workdir = workdir
        self.node_timeout_ms = node_timeout_ms
        self.ports = _cluster_ports(6)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        return f"redis+cluster://:{TEST_PASSWORD}@{seeds}"

    def cli(self, port: int, *args: str, check: bool = True) -> str:
        proc = subprocess.run([_binary("redis-cli"), "-p", str(port), "-a", TEST_PASSWORD, "--no-auth-warning", *args],
                              capture_output=True, text=True, timeout=30, check=check)
        return proc.stdout

    def start(self) -> None:
        for port in self.ports:
            folder = self.workdir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--requirepass", TEST_PASSWORD,
                 "--masterauth", TEST_PASSWORD, "--dir", str(folder)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: all(_listening(p) for p in self.ports), 15)
        self.cli(self.ports[0], "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "1", "--cluster-yes")
        assert wait_for(self.healthy, 30), self.cli(self.ports[0], "cluster", "nodes")

    def healthy(self) -> bool:
        """Every live node sees the cluster as ok, with three masters serving all slots."""
        live = [p for p, proc in self.procs.items() if proc.poll() is None]
        if not all("cluster_state:ok" in self.cli(p, "cluster", "info", check=False) for p in live):
            return False
        masters = self.masters()
        return len(masters) == 3 and all(self.replicas_of(m) >= min(1, len(live) - 3) for m in masters)

    def replicas_of(self, port: int) -> int:
        """Replicas a master sees connected and in sync (ROLE lists them)."""
        role = self.cli(port, "role", check=False).split()
        return (len(role) - 2) // 3 if role and role[0] == "master" else 0

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by a live node: one dict per node (address, flags, slots)."""
        out = []
        for line in self.cli(self.live(), "cluster", "nodes").splitlines():
            fields = line.split()
            out.append({"id": fields[0], "port": fields[1].split("@")[0].rsplit(":", 1)[1], "flags": fields[2],
                        "slots": " ".join(fields[8:])})
        return out

    def live(self) -> int:
        return next(p for p, proc in self.procs.items() if proc.poll() is None)

    def masters(self) -> list[int]:
        return sorted(int(n["port"]) for n in self.nodes()
                      if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"])

    def master_of(self, key: str) -> int | None:
        """The live master serving `key`'s slot (None while no master does: during a failover)."""
        slot = int(self.cli(self.live(), "cluster", "keyslot", key).strip())
        for node in self.nodes():
            if "master" not in node["flags"] or "fail" in node["flags"]:
                continue
            for span in node["slots"].split():
                if span.startswith("["):
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(node["port"])
        return None

    def kill(self, port: int) -> None:
        """kill -9: the node dies without a goodbye, as a crashed host would."""
        self.procs[port].kill()
        self.procs[port].wait(10)

    def flush(self) -> None:
        for port in self.masters():
            self.cli(port, "flushall")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)
        self.procs.clear()
