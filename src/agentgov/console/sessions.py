"""Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, kept in memory.

Each session carries its own CSRF token, required on every state-changing request (a form field or
the `X-CSRF-Token` header htmx sends). Sessions live in the console process only: a restart signs
everyone out, which is the safe direction for an admin door.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from agentgov.engine.model import Subject

COOKIE = "agentgov_console"
LOGIN_COOKIE = "agentgov_console_login"  # double-submit token of the sign-in form (login CSRF)
MAX_SESSIONS = 10_000


def same_token(expected: str, presented: str) -> bool:
    """Constant-time comparison of a token with what a browser sent (compared as UTF-8 bytes: a
    presented value with non-ASCII characters is simply wrong, never an error)."""
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Session:
    id: str
    person: Subject
    csrf: str
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and same_token(self.csrf, str(presented))


@dataclass
class Sessions:
    ttl_s: float
    _by_id: dict[str, Session] = field(default_factory=dict)

    def create(self, person: Subject) -> Session:
        now = time.time()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires_at > now}
            if len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest goes
                del self._by_id[min(self._by_id, key=lambda k: self._by_id[k].expires_at)]
        session = Session(secrets.token_urlsafe(32), person, secrets.token_urlsafe(32), now + self.ttl_s)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.time():
            del self._by_id[session_id]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)
