"""The console's web application (aiohttp + Jinja2 templates + htmx and Chart.js in the browser).

Every page needs a session: a person signs in with a JWT or an API key, verified by the
configuration's identity settings exactly as a caller is, and must hold `console.admin_role`.
Every state-changing request (approve, deny, verify, sign out) must carry the session's CSRF token
and, when the browser says where it comes from (`Origin`), come from the console itself. Responses
forbid framing, sniffing, caching and any script or style not served by the console (CSP).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from agentgov.console.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions, same_token
from agentgov.console.settings import ConsoleSettings
from agentgov.console.views import (
    Sources,
    chains,
    decision_detail,
    decisions,
    recent_records,
    refusals,
    revisions,
    run_verify,
    shadow_summary,
)
from agentgov.engine.approvals.evidence import NotRecorded, decide_recorded
from agentgov.engine.approvals.links import link_problem
from agentgov.engine.approvals.store import ApprovalRefused, ApprovalStore, ApprovalStoreError
from agentgov.engine.approvals.stores import open_store as open_approvals
from agentgov.engine.config.people import NotAuthenticated, verify_person
from agentgov.engine.hooks.budget.hook import open_store as open_budgets
from agentgov.engine.hooks.budget.report import usage_report
from agentgov.engine.hooks.budget.store import BudgetStore, StoreError

log = logging.getLogger("agentgov.console")
HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR = ("htmx.min.js", "chart.umd.js")  # from npm at build time (make console-assets), shipped in the wheel
PUBLIC = ("/login", "/static/", "/healthz", "/favicon.ico")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")

SESSION_KEY: web.RequestKey[Session] = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConsoleAssetsMissing(RuntimeError):
    """The browser libraries were not built into this install (`make console-assets`)."""


def check_assets() -> None:
    missing = [name for name in VENDOR if not (STATIC / "vendor" / name).is_file()]
    if missing:
        raise ConsoleAssetsMissing(f"the console's browser libraries are missing ({', '.join(missing)} in "
                                   f"{STATIC / 'vendor'}): run `make console-assets` (npm) before building or "
                                   "installing agentgov")


class Console:
    def __init__(self, settings: ConsoleSettings, sources: Sources) -> None:
        self.settings = settings
        self.sources = sources
        self.sessions = Sessions(settings.session_ttl_s)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=True, undefined=jinja2.StrictUndefined)
        self.budgets: BudgetStore | None = None
        self.approvals: ApprovalStore | None = None
        self._verify: dict[str, Any] | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def render(self, request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
        session = request.get(SESSION_KEY)
        page = self.templates.get_template(name).render(
            person=session.person if session else None, csrf=session.csrf if session else "",
            path=request.path, **context)
        return web.Response(text=page, status=status, content_type="text/html")

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:
            response = exc
        except Exception:
            log.exception("console %s %s", request.method, request.path)
            response = web.Response(status=500, text="internal error (logged)")
        response.headers.update({"content-security-policy": CSP, "x-content-type-options": "nosniff",
                                 "referrer-policy": "same-origin", "x-frame-options": "DENY"})
        if not request.path.startswith("/static/"):
            response.headers["cache-control"] = "no-store"
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD") and not self._same_origin(request):
            return web.Response(status=403, text="cross-origin request refused")
        if request.path.startswith(PUBLIC):
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.headers.get("HX-Request"):
                return web.Response(status=401, headers={"HX-Redirect": "/login"})
            # Back to where the person was going once signed in (an approve link from a notification).
            target = request.path_qs if request.method == "GET" else ""
            raise web.HTTPSeeOther("/login" + (f"?next={quote(target, safe='')}" if _safe_next(target) else ""))
        request[SESSION_KEY] = session
        if request.method not in ("GET", "HEAD"):
            form = await request.post()
            presented = request.headers.get("X-CSRF-Token") or str(form.get("csrf", ""))
            if not session.csrf_ok(presented):
                return web.Response(status=403, text="missing or wrong CSRF token")
        return await handler(request)

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site form: the CSRF token still decides
        return origin == f"{request.scheme}://{request.host}"

    # --- sign in and out --------------------------------------------------------------------

    async def login_page(self, request: web.Request, error: str = "", status: int = 200,
                         next_path: str = "") -> web.Response:
        # One token per browser, kept while it is valid: a second tab (or the browser's own fetch of
        # a favicon, redirected here) must not invalidate the form already on screen.
        current = request.cookies.get(LOGIN_COOKIE, "")
        token = current if len(current) >= 32 else secrets.token_urlsafe(24)
        next_path = _safe_next(next_path or request.query.get("next", ""))
        response = self.render(request, "login.html", status, login_csrf=token, error=error, next_path=next_path)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                            secure=self.settings.secure_cookie)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        next_path = _safe_next(str(form.get("next", "")))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not same_token(expected, str(form.get("login_csrf", ""))):
            return await self.login_page(request, "the sign-in form expired: try again", 403, next_path)
        token, api_key = str(form.get("token", "")).strip(), str(form.get("api_key", "")).strip()
        try:
            person = verify_person(self.sources.cfg, token=token or None, api_key=api_key or None)
        except NotAuthenticated as exc:
            return await self.login_page(request, str(exc), 401, next_path)
        if self.settings.admin_role not in person.roles:
            return await self.login_page(request, f"signing in needs the role {self.settings.admin_role}", 403,
                                         next_path)
        session = self.sessions.create(person)
        response = web.HTTPSeeOther(next_path or "/decisions")
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                            max_age=int(self.settings.session_ttl_s), secure=self.settings.secure_cookie)
        response.del_cookie(LOGIN_COOKIE, path="/login")
        log.info("console: %s signed in", person.id)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    # --- pages ------------------------------------------------------------------------------

    async def _records(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(recent_records, self.sources.audit_dir)

    def _filters(self, request: web.Request) -> dict[str, str]:
        return {k: request.query.get(k, "")[:200] for k in ("subject", "tenant", "action", "decision", "reason")}

    async def decisions_page(self, request: web.Request) -> web.Response:
        return self.render(request, "decisions.html", filters=self._filters(request),
                           audit_on=self.sources.audit_dir is not None)

    async def decision_rows(self, request: web.Request) -> web.Response:
        rows = decisions(await self._records(), self._filters(request))
        return self.render(request, "decision_rows.html", rows=rows)

    async def decision_page(self, request: web.Request) -> web.Response:
        found = decision_detail(await self._records(), request.match_info["decision_id"])
        if not found:
            return self.render(request, "message.html", 404, title="Decision not found",
                               message="No recent audit record has this decision id.")
        return self.render(request, "decision.html", records=found)

    async def refusals_page(self, request: web.Request) -> web.Response:
        return self.render(request, "refusals.html", audit_on=self.sources.audit_dir is not None)

    async def refusals_data(self, request: web.Request) -> web.Response:
        return web.json_response(refusals(await self._records()))

    async def budgets_page(self, request: web.Request) -> web.Response:
        return self.render(request, "budgets.html", on=self.sources.budgets is not None)

    async def budget_rows(self, request: web.Request) -> web.Response:
        if self.sources.budgets is None or self.budgets is None:
            return self.render(request, "budget_rows.html", rows=[], error="")
        try:
            rows = await usage_report(self.sources.budgets, self.budgets)
        except StoreError as exc:
            return self.render(request, "budget_rows.html", rows=[], error=f"budget store unavailable: {exc}")
        rows.sort(key=lambda r: (-r["used"], r["limit"], r["key"]))
        return self.render(request, "budget_rows.html", rows=rows, error="")

    async def approvals_page(self, request: web.Request) -> web.Response:
        return self.render(request, "approvals.html", on=self.sources.approvals is not None)

    async def approval_rows(self, request: web.Request, notice: str = "", error: str = "") -> web.Response:
        if self.approvals is None:
            return self.render(request, "approval_rows.html", pending=[], recent=[], notice="", error="")
        try:
            everything = await self.approvals.list(None)
        except ApprovalStoreError as exc:
            return self.render(request, "approval_rows.html", pending=[], recent=[], notice="",
                               error=f"approvals store unavailable: {exc}")
        pending = [a.to_dict() for a in everything if a.status == "pending"]
        recent = [a.to_dict() for a in sorted((a for a in everything if a.status != "pending"),
                                              key=lambda a: a.decided_at or a.created_at, reverse=True)[:20]]
        return self.render(request, "approval_rows.html", pending=pending, recent=recent, notice=notice, error=error)

    async def decide(self, request: web.Request) -> web.Response:
        approve = request.match_info["verb"] == "approve"
        approval_id = request.match_info["approval_id"]
        if self.approvals is None:
            return await self.approval_rows(request, error="approvals are off in this configuration")
        person = request[SESSION_KEY].person
        htmx = bool(request.headers.get("HX-Request"))
        try:
            approval = await decide_recorded(self.sources.audit, self.approvals, approval_id, approve, person)
        except ApprovalRefused as exc:
            if not htmx:
                return self.render(request, "message.html", 409, title="Refused", message=str(exc))
            return await self.approval_rows(request, error=f"refused: {exc}")
        except (NotRecorded, ApprovalStoreError) as exc:
            if not htmx:
                return self.render(request, "message.html", 503, title="Not done", message=str(exc))
            return await self.approval_rows(request, error=str(exc))
        notice = f"{approval.id} {approval.status} by {person.id}"
        if not htmx:
            return self.render(request, "message.html", title=approval.status.capitalize(), message=notice)
        return await self.approval_rows(request, notice=notice)

    async def link(self, request: web.Request) -> web.Response:
        """An approve/deny link from a notification: checked (signature, expiry), then a confirmation
        page; the decision itself is the signed-in person's POST, as from the queue."""
        approval_id, verb = request.match_info["approval_id"], request.match_info["verb"]
        if self.sources.link_key is None or self.approvals is None:
            return self.render(request, "message.html", 404, title="No such link",
                               message="This console does not accept approval links (approvals.links).")
        problem = link_problem(self.sources.link_key, approval_id, verb, request.query.get("exp", ""),
                               request.query.get("sig", ""))
        if problem:
            return self.render(request, "message.html", 403, title="Link refused", message=problem)
        try:
            approval = await self.approvals.get(approval_id)
        except ApprovalStoreError as exc:
            return self.render(request, "message.html", 503, title="Not available", message=str(exc))
        if approval is None:
            return self.render(request, "message.html", 404, title="No such approval", message=approval_id)
        return self.render(request, "approval_confirm.html", approval=approval.to_dict(), verb=verb)

    async def audit_page(self, request: web.Request) -> web.Response:
        listed = await asyncio.to_thread(chains, self.sources.audit_dir)
        return self.render(request, "audit.html", chains=listed, audit_on=self.sources.audit_dir is not None,
                           verified=self._verify, signed=self.sources.verify_key is not None)

    async def verify(self, request: web.Request) -> web.Response:
        report = await asyncio.to_thread(run_verify, self.sources)
        self._verify = {"ok": report.ok, "by": request[SESSION_KEY].person.id,
                        "chains": [{"chain": c.chain, "records": c.records, "checkpoints": c.checkpoints,
                                    "problem": c.problem} for c in report.chains], "notes": report.notes}
        return self.render(request, "verify_result.html", verified=self._verify)

    async def policy_page(self, request: web.Request) -> web.Response:
        records = await self._records()
        cfg = self.sources.cfg
        source = _redacted(cfg.bundle.source) if cfg.bundle else ", ".join(map(str, cfg.paths))
        return self.render(request, "policy.html", engine=cfg.engine, source=source,
                           kind="bundle" if cfg.bundle else "files", revisions=revisions(records),
                           shadow=shadow_summary(records),
                           shadow_source=_redacted(cfg.shadow.source) if cfg.shadow else "",
                           polling=(f"every {cfg.bundle.reload.poll_min_s:g}-{cfg.bundle.reload.poll_max_s:g} s, "
                                    + ("signed bundles only" if cfg.bundle.reload.keys else "unsigned accepted"))
                           if cfg.bundle else "")

    async def index(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/decisions")

    async def no_icon(self, _request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "serving"})

    # --- lifecycle --------------------------------------------------------------------------

    async def on_startup(self, _app: web.Application) -> None:
        if self.sources.budgets is not None:
            self.budgets = open_budgets(self.sources.budgets, self.sources.cfg.base)
        if self.sources.approvals is not None:
            self.approvals = open_approvals(self.sources.approvals.store, self.sources.cfg.base)

    async def on_cleanup(self, _app: web.Application) -> None:
        for store in (self.budgets, self.approvals):
            if store is not None:
                await store.close()

    def app(self) -> web.Application:
        check_assets()
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/decisions", self.decisions_page)
        app.router.add_get("/decisions/rows", self.decision_rows)
        app.router.add_get("/decisions/{decision_id}", self.decision_page)
        app.router.add_get("/refusals", self.refusals_page)
        app.router.add_get("/refusals/data", self.refusals_data)
        app.router.add_get("/budgets", self.budgets_page)
        app.router.add_get("/budgets/rows", self.budget_rows)
        app.router.add_get("/approvals", self.approvals_page)
        app.router.add_get("/approvals/rows", self.approval_rows)
        app.router.add_post(r"/approvals/{approval_id}/{verb:approve|deny}", self.decide)
        app.router.add_get(r"/approvals/{approval_id}/{verb:approve|deny}", self.link)
        app.router.add_get("/audit", self.audit_page)
        app.router.add_post("/audit/verify", self.verify)
        app.router.add_get("/policy", self.policy_page)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        return app


def _safe_next(path: str) -> str:
    """Where to go after signing in: a path on this console only (never another site)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 2000:
        return ""
    if path.startswith(("/login", "/logout", "/static/")):
        return ""
    return path


def _redacted(source: str) -> str:
    """A bundle source as shown: credentials in a URL's user part are never displayed."""
    scheme, sep, rest = source.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return source
