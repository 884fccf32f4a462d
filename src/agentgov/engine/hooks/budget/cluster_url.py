"""The address of a Redis Cluster budget store, `redis+cluster://[user:password@]host:port[,host:port…]`
(`rediss+cluster://…?ssl_ca_certs=…` for TLS), read without importing the Redis client, so that a
configuration check refuses a bad one at once."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

SCHEMES = ("redis+cluster://", "rediss+cluster://")
_TLS_OPTIONS = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}


class ClusterUrlError(ValueError):
    pass


def cluster_options(url: str) -> dict[str, Any]:
    """The RedisCluster arguments a `redis+cluster://` address stands for: seed nodes as (host, port),
    credentials, and TLS files as query options (as `rediss://` takes them)."""
    if not url.startswith(SCHEMES):
        raise ClusterUrlError("a Redis Cluster store is redis+cluster://host:port[,host:port…]")
    parts = urlsplit(url.replace("+cluster://", "://", 1))
    netloc = parts.netloc.rsplit("@", 1)
    credentials, hosts = (netloc[0], netloc[1]) if len(netloc) == 2 else ("", netloc[0])
    nodes: list[tuple[str, int]] = []
    for seed in hosts.split(","):
        host, _, port = seed.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterUrlError(f"{redact(url)}: seed node {seed!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ClusterUrlError(f"{redact(url)}: a Redis Cluster has only database 0")
    options: dict[str, Any] = {"startup_nodes": nodes}
    if credentials:
        user, _, password = credentials.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _TLS_OPTIONS)
    if unknown:
        raise ClusterUrlError(f"{redact(url)}: unknown option(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(_TLS_OPTIONS))})")
    if url.startswith("rediss+"):
        options["ssl"] = True
        for key, values in query.items():
            options[key] = values[-1] if key != "ssl_check_hostname" else values[-1].lower() in ("1", "true", "yes")
    elif query:
        raise ClusterUrlError(f"{redact(url)}: TLS options need rediss+cluster://")
    return options


def redact(url: str) -> str:
    """A store's address without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
