"""A remote OPA server through opa-python-client's AsyncOpaClient (OPA's Data API).

For policies that need full OPA (crypto, graphql, newest syntax). The client and its errors stay
inside this module; a timeout, refused connection, HTTP error or undefined result is a deny.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient

from agentgov.engine.backends.base import Explanation, ResultReader, decision_from_document, engine_error, is_fatal
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.model import Decision


@dataclass(frozen=True)
class OpaEndpoint:
    host: str
    port: int
    ssl: bool

    @staticmethod
    def parse(url: str) -> OpaEndpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must be http(s)://host[:port], got {url!r}")
        secure = parts.scheme == "https"
        return OpaEndpoint(parts.hostname, parts.port or (443 if secure else 8181), secure)


class RemoteOpaBackend:
    name = "opa"

    def __init__(self, url: str, rule: str = DEFAULT_RULE, *, token: str | None = None,
                 timeout_s: float = 1.0, retries: int = 0, reader: ResultReader = decision_from_document) -> None:
        self.endpoint = OpaEndpoint.parse(url)
        if not rule.startswith("data.") or rule.count(".") < 2:
            raise ValueError(f"rule must look like data.<package>.<rule>, got {rule!r}")
        self.rule = rule
        self._package, self._rule_name = rule[len("data."):].rsplit(".", 1)
        self._token = token
        self._timeout = timeout_s
        self._retries = retries
        self._read = reader
        self._client: AsyncOpaClient | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> AsyncOpaClient:
        async with self._lock:
            if self._client is None:
                client = AsyncOpaClient(host=self.endpoint.host, port=self.endpoint.port, ssl=self.endpoint.ssl,
                                        token=self._token, timeout=self._timeout, retries=self._retries)
                await client.__aenter__()
                self._client = client
            return self._client

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            client = await self._connected()
            response = await client.query_rule(dict(policy_input), self._package, self._rule_name)
        except BaseException as exc:
            if is_fatal(exc) or isinstance(exc, asyncio.CancelledError):
                raise
            return engine_error(self.name, f"remote OPA at {self.endpoint.host}:{self.endpoint.port}: "
                                           f"{type(exc).__name__}: {exc}")
        if not isinstance(response, Mapping):
            return engine_error(self.name, "remote OPA answered with a non-object body")
        return self._read(response.get("result"), engine=self.name)

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        decision = await self.evaluate(policy_input)
        return Explanation(decision, [f"evaluated {self.rule} on remote OPA "
                                      f"{self.endpoint.host}:{self.endpoint.port}; use OPA's ?explain=full for a trace"])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close_connection()
            self._client = None
