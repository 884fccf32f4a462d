"""Where `serve` gets its bundle from, polled: a local file or folder, an HTTP bundle server, or an
OCI registry. Each source answers "what is there now" with an ETag-like tag, so an unchanged
bundle is neither downloaded again (HTTP 304, OCI layer digest) nor reloaded."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentgov.engine.bundles import remote
from agentgov.engine.bundles.archive import bundle_error
from agentgov.engine.bundles.bundle import build_bundle
from agentgov.engine.policy.sources import BUNDLE_SUFFIXES


@dataclass(frozen=True)
class Fetched:
    blob: bytes | None  # None: unchanged since the tag given
    tag: str


class BundleSource(Protocol):
    where: str

    async def fetch(self, tag: str) -> Fetched: ...


def _tag(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class LocalSource:
    """A bundle file, or a policy folder built into a bundle on each poll (deterministic, so an
    unchanged folder gives the same bytes and is not reloaded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    async def fetch(self, tag: str) -> Fetched:
        blob = await asyncio.to_thread(self._read)
        new = _tag(blob)
        return Fetched(None if new == tag else blob, new)

    def _read(self) -> bytes:
        if self.path.is_dir():
            return build_bundle([self.path])
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise bundle_error(self.where, f"cannot read bundle: {exc.strerror or exc}") from None


class HttpSource:
    """An OPA bundle service: GET with a bearer token and If-None-Match."""

    def __init__(self, url: str, token: str = "") -> None:
        self.url, self.token = url, token
        self.where = url

    async def fetch(self, tag: str) -> Fetched:
        pulled = await remote.pull(self.url, token=self.token, etag=tag)
        if pulled.blob is None:
            return Fetched(None, tag)
        # A server without ETags is still not reloaded when nothing changed: the content is the tag.
        return Fetched(pulled.blob, pulled.etag or _tag(pulled.blob))


class OciSource:
    """An OCI artifact in OPA's layout; the layer digest is the tag (the manifest is read each poll,
    the layer only when it changed)."""

    def __init__(self, reference: str, insecure: bool = False) -> None:
        self.reference, self.insecure = reference, insecure
        self.where = reference

    async def fetch(self, tag: str) -> Fetched:
        # oras (and with it requests and jsonschema, ~8 MB resident) only in a worker that pulls from OCI.
        from agentgov.engine.bundles import oci

        pulled = await asyncio.to_thread(oci.pull_if_changed, self.reference, tag, insecure=self.insecure)
        if pulled is None:
            return Fetched(None, tag)
        blob, digest = pulled
        return Fetched(blob, digest)


def source_for(location: str, base: Path, *, token: str = "", insecure: bool = False) -> BundleSource:
    """`oci://…`, `http(s)://…`, or a path (relative to the config file) to a bundle or a folder."""
    if location.startswith("oci://"):
        return OciSource(location, insecure)
    if location.startswith(("http://", "https://")):
        return HttpSource(location, token)
    path = base / location
    if not path.is_dir() and not path.name.endswith(BUNDLE_SUFFIXES):
        raise bundle_error(location, "a bundle source is oci://…, http(s)://…, a .tar.gz bundle or a policy folder")
    return LocalSource(path)
