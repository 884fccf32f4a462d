"""Telling the approvers: each new approval request is POSTed to the configured webhooks (a plain
JSON document, or a Slack-compatible message with approve and deny buttons), off the decision's
path, with bounded retries; each delivery (or its failure) is a record in the approvals audit chain.

The message names the call (subject, tenant, action, the arguments' hash, the reason) but never the
arguments themselves: they may hold personal data, and chat tools keep messages. The approver reads
them in the console the link opens.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agentgov.engine.approvals.links import LinkSigner
from agentgov.engine.approvals.store import Approval, utc_instant

log = logging.getLogger("agentgov.approvals")
MAX_PENDING = 1000  # deliveries waiting at once; beyond it a delivery is dropped (and recorded as such)
ATTEMPTS = 3
TIMEOUT_S = 5.0
FORMATS = ("json", "slack")


@dataclass(frozen=True)
class Webhook:
    url: str
    format: str = "json"
    token_env: str = ""  # the bearer token, by reference: the variable's name, never its value

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


Recorder = Callable[[Approval, str, str], Awaitable[None]]  # (approval, event, detail)


def message(webhook: Webhook, approval: Approval, links: Mapping[str, str], status_url: str) -> dict[str, Any]:
    call = f"{approval.kind} {approval.name}"
    about = {"id": approval.id, "subject": approval.subject, "tenant": approval.tenant, "kind": approval.kind,
             "name": approval.name, "arguments_sha256": approval.arguments_sha256, "reason": approval.reason,
             "approvers": list(approval.approvers), "uses": approval.uses, "expires_at": utc_instant(approval.expires_at),
             "policy_revision": approval.revision}
    if webhook.format == "json":
        return {"type": "approval.requested", "approval": about, "links": dict(links), "status_url": status_url}
    text = (f"*{approval.subject}* ({approval.tenant or '-'}) asks to run `{call}`: {approval.reason}. "
            f"Needs one of: {', '.join(approval.approvers)}. Approval `{approval.id}`, "
            f"expires {utc_instant(approval.expires_at)}.")
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if links:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": verb.capitalize()}, "url": url,
             "style": "primary" if verb == "approve" else "danger", "action_id": f"agentgov_{verb}"}
            for verb, url in links.items()]})
    return {"text": text, "blocks": blocks}


class Notifier:
    """Delivers notifications in the background of the worker that opened the approval."""

    def __init__(self, webhooks: Sequence[Webhook], signer: LinkSigner | None, recorder: Recorder | None) -> None:
        self.webhooks = tuple(webhooks)
        self.signer = signer
        self.recorder = recorder
        self.tasks: set[asyncio.Task[None]] = set()

    def requested(self, approval: Approval, status_url: str) -> None:
        links = {verb: self.signer.link(approval.id, verb) for verb in ("approve", "deny")} if self.signer else {}
        for webhook in self.webhooks:
            if len(self.tasks) >= MAX_PENDING:
                log.warning("approval %s: notification to %s dropped (%d pending)", approval.id, webhook.host,
                            len(self.tasks))
                continue
            task = asyncio.create_task(self._deliver(webhook, approval, message(webhook, approval, links, status_url)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(self, webhook: Webhook, approval: Approval, body: dict[str, Any]) -> None:
        import aiohttp

        headers = {"content-type": "application/json", "user-agent": "agentgov-approvals"}
        if webhook.token_env:
            headers["authorization"] = f"Bearer {os.environ.get(webhook.token_env, '')}"
        outcome = "no attempt"
        for attempt in range(ATTEMPTS):
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session, \
                        session.post(webhook.url, json=body, headers=headers, allow_redirects=False) as response:
                    outcome = f"HTTP {response.status}"
                    if 200 <= response.status < 300:
                        await self._record(approval, "notified", f"{webhook.host}: {outcome}")
                        return
                    if 400 <= response.status < 500 and response.status != 429:
                        break  # the receiver refuses this message: retrying will not change that
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome = type(exc).__name__
            await asyncio.sleep(0.5 * 4 ** attempt)
        log.warning("approval %s: notification to %s failed (%s)", approval.id, webhook.host, outcome)
        await self._record(approval, "notify_failed", f"{webhook.host}: {outcome}")

    async def _record(self, approval: Approval, event: str, detail: str) -> None:
        if self.recorder is None:
            return
        try:
            await self.recorder(approval, event, detail)
        except Exception as exc:  # evidence that cannot be written is logged; the approval itself stands
            log.warning("approval %s: %s not recorded: %s", approval.id, event, exc)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
