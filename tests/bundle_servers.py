"""Real bundle sources the tests start themselves: an HTTP bundle server on loopback (what OPA's
bundle service API asks of a server: bearer token, ETag, 304) and an OCI registry (Debian's
docker-registry)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import bcrypt

from agentgov.cli.stack import free_port
from tests.http_helpers import LoopbackServer
from tests.support import wait_for

TOKEN = "test-token-not-a-secret"  # a marked test credential


class BundleServer(LoopbackServer):
    """Stores what is PUT under its path; serves it with an ETag (its SHA-256) and honours
    If-None-Match. Requires `Authorization: Bearer TOKEN`. It can be stopped and started again on
    the same port (a bundle source that goes down and comes back)."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _authorised(self) -> bool:
                outer.requests.append((self.command, self.path, dict(self.headers)))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                return True

            def do_PUT(self) -> None:
                if not self._authorised():
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.store[self.path] = body
                self.send_response(201)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()[:16]}"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                body = outer.store.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> BundleServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Registry:
    """A real OCI registry (Debian's docker-registry) on a free loopback port, storage in a temp dir;
    with `credentials`, one that requires them (htpasswd basic auth, as a private registry does)."""

    def __init__(self, root: Path, credentials: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.root = root
        self.credentials = credentials  # with these, the registry requires HTTP basic auth (htpasswd)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        binary = shutil.which("docker-registry")
        assert binary, "docker-registry is not installed (.ci/run installs it with apt-get)"
        config = self.root / "config.yml"
        auth = ""
        if self.credentials:
            user, password = self.credentials
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.root / "htpasswd").write_text(f"{user}:{hashed}\n")
            auth = f"auth: {{htpasswd: {{realm: agentgov-tests, path: {self.root / 'htpasswd'}}}}}\n"
        config.write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: "
                          f"{self.root / 'data'}}}}}\nhttp: {{addr: 127.0.0.1:{self.port}}}\n{auth}")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        assert wait_for(up, 15), "docker-registry did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
