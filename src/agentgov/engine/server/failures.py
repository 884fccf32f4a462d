"""A door that fails before (or while) answering: one way to log, count and audit it.

Which status, error code and gRPC code each door then sends comes from the one error table
(`engine/errors.py`); this module only makes sure the failure has a decision id, is counted under
the table's outcome, and passes the runner's after hooks (so the audit log has it) when decisions
are made in this process. It never raises: a door's last line of defence must not fail itself.
"""

from __future__ import annotations

import logging
import sys
import uuid

from agentgov.engine.errors import Failure
from agentgov.engine.metrics import DECISIONS
from agentgov.engine.model import ANONYMOUS, Decision
from agentgov.engine.pipeline import Envelope, Governor, Verdict

log = logging.getLogger("agentgov.server")


async def door_failed(door: str, failure: Failure, reason: str, *, local: Governor | None,
                      env: Envelope | None = None, why: str = "") -> Verdict:
    """The verdict a door renders for its own failure. Call it from an `except` block: with
    `failure` INTERNAL the traceback is logged (operator log only; no request data in the message)."""
    raised = sys.exc_info() if failure is Failure.INTERNAL else None  # taken before any await
    try:
        if local is not None:
            verdict = await local.refuse(door, failure, reason, env=env, error=why)
        else:
            verdict = Verdict(Decision.failed(failure, reason, error=why or None), ANONYMOUS, uuid.uuid4().hex)
    except Exception:  # the audit itself failed: still answer, fail closed, with an id to look for
        log.exception("could not record the failure of a %s request", door)
        verdict = Verdict(Decision.failed(failure, reason, error=why or None), ANONYMOUS, uuid.uuid4().hex)
    if raised is not None:
        log.error("internal error, decision %s denied with %d", verdict.decision_id, failure.status, exc_info=raised)
    else:
        log.warning("decision %s denied with %d: %s", verdict.decision_id, failure.status, why or reason)
    DECISIONS.labels(api=door, outcome=failure.answer.outcome, reason=reason).inc()
    return verdict
