"""Moving bundles over HTTP: pull as an OPA agent pulls from a bundle service (GET with a bearer
token and `If-None-Match`, 304 when unchanged), push with PUT to a server that stores what it is
sent (nginx WebDAV, S3-style gateways, agentgov's own tests). OCI registries are not covered yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentgov.engine.bundles.archive import MAX_TOTAL_BYTES, bundle_error

if TYPE_CHECKING:
    import aiohttp

# aiohttp is imported by the calls below, not at import: the bundle sources import this module, and
# a worker that serves local bundles never needs an HTTP client (~16 MB of its memory).
_TIMEOUT_TOTAL_S, _TIMEOUT_CONNECT_S = 60, 10
MAX_DOWNLOAD_BYTES = MAX_TOTAL_BYTES  # compressed never exceeds what the reader would accept expanded


@dataclass(frozen=True)
class Pulled:
    blob: bytes | None   # None: unchanged since `etag` (304)
    etag: str


def _session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_TOTAL_S, connect=_TIMEOUT_CONNECT_S))


def _headers(token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = dict(extra or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def pull(url: str, *, token: str = "", etag: str = "") -> Pulled:
    """The bundle at `url`, or None when the server says it has not changed since `etag`."""
    import aiohttp

    headers = _headers(token, {"If-None-Match": etag} if etag else None)
    try:
        async with _session() as session, \
                session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status == 304:
                return Pulled(None, etag)
            if response.status != 200:
                raise bundle_error(url, f"the bundle server answered {response.status} {response.reason or ''}".strip())
            blob = await _read_bounded(response, url)
            return Pulled(blob, response.headers.get("ETag", ""))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise bundle_error(url, f"cannot reach the bundle server: {type(exc).__name__}: {exc}") from None


async def push(url: str, blob: bytes, *, token: str = "") -> str:
    """PUT the bundle; returns the ETag the server gave it ("" when none)."""
    import aiohttp

    headers = _headers(token, {"Content-Type": "application/gzip"})
    try:
        async with _session() as session, \
                session.put(url, data=blob, headers=headers, allow_redirects=False) as response:
            if response.status not in (200, 201, 204):
                raise bundle_error(url, f"the bundle server refused the upload: {response.status} "
                                   f"{response.reason or ''}".strip())
            return response.headers.get("ETag", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise bundle_error(url, f"cannot reach the bundle server: {type(exc).__name__}: {exc}") from None


async def _read_bounded(response: aiohttp.ClientResponse, url: str) -> bytes:
    if (response.content_length or 0) > MAX_DOWNLOAD_BYTES:
        raise bundle_error(url, f"the bundle is larger than {MAX_DOWNLOAD_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_DOWNLOAD_BYTES:
            raise bundle_error(url, f"the bundle is larger than {MAX_DOWNLOAD_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
