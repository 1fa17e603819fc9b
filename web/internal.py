"""The internal listener (``NPSFLOW_INTERNAL_BIND``, 127.0.0.1 by default): read-only analytics over the worker's
own ClickHouse store, the live dashboard and the agents' counters. The CLI talks to it (``npsflow report`` …).

GET /healthz                 liveness (never needs the token)
GET /readyz                  readiness in the worker's role (web.health; never needs the token)
GET /api/v1/stats            in-memory counters of the agents
GET /api/v1/report?by=location,channel&since=ISO&until=ISO[&compare_previous=1]
GET /api/v1/windows?segment=location=Espoo
GET /api/v1/deadletters
GET /api/v1/dispatches
GET /api/v1/alerts?status=open|closed  significant-change alerts, latest event of each (sinks.queries.alerts)
GET /api/v1/dashboard?by=location    what the live dashboard shows (sinks.queries.dashboard + web.dashboard words)
GET /api/v1/terms?since&until&by&lang&category&min_count&min_category&min_respondents&limit&examples
                             term statistics (sinks.terms.terms)
GET /api/v1/themes?…         the same per theme (NPSFLOW_THEMES) and the suggested themes
GET /api/v1/cloud?since&until the word cloud's words: the most named terms with their NPS (sinks.terms.cloud_words)
GET /api/v1/cases?status=open|overdue|closed&owner=O   follow-up cases and their summary (sinks.casebook)
GET /api/v1/case?id=CASE_ID  one case with its notes and history ({"case": null} when there is none)
GET /api/v1/cases/stats?by=owner|<dimension>           time to first contact, share closed within the SLA
POST /api/v1/cases/{case_id}/{ack|note|assign|close}   a command (JSON body: actor, text, owner, reason;
                             Content-Type application/json only; optional Idempotency-Key header: a retry
                             with the same key is applied once): 202 {"command_id"} once Kafka has it (200 when
                             that key was applied already), 404 unknown case, 409 refused (closed, already
                             acknowledged …), 400 bad input
GET /dashboard?by=location           the built-in live dashboard (web.dashboard)
GET /api/v1/invitation/{id}  one invitation of this worker's table, for another worker's survey page (web.routing):
                             200 {"invitation": {...}}; 404 {"reason": "unknown"} (this worker holds its partition,
                             no such invitation); 409 {"reason": "not_held"} (another worker's partition); 503
                             {"reason": "recovering"} (a rebalance or table recovery in progress)

With ``NPSFLOW_INTERNAL_TOKEN`` set, every path but /healthz and /readyz needs ``Authorization: Bearer <token>`` (401).
"""

from __future__ import annotations

import asyncio
import re
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from sinks import casebook, erasure, queries, terms
from streams.cases import COMMANDS, CommandRefused, command_for
from streams.responses import Rejected, parse_timestamp
from web.common import (bearer_guard, favicon, healthz, host_guard, html_reply, json_reply, leftover_body,
                        quiet_client_errors, transport_policy)
from web.dashboard import content_security_policy, dashboard_words, render_dashboard

log = logging.getLogger("npsflow.web")
DASHBOARD_CACHE_SECONDS = 5.0
WORDS_CACHE_SECONDS = 60.0  # the word cloud and the complaints: term statistics over 30 days, not every 5 s
DASHBOARD_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                     "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def _time(value: str | None, name: str) -> datetime | None:
    return parse_timestamp(value, name) if value else None


def error(status: int, message: str) -> web.Response:
    return json_reply({"error": message}, status=status)


class SharedResult:
    """A computation shared by every caller: run at most once per ``max_age`` seconds per key, one at a time, so
    open dashboard tabs never keep the store — which the sinks also use — busy."""

    def __init__(self, compute: Callable[[str], Any], max_age: float = DASHBOARD_CACHE_SECONDS) -> None:
        self.compute, self.max_age = compute, max_age
        self.results: dict[str, tuple[float, Any]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> Any:
        async with self.locks.setdefault(key, asyncio.Lock()):
            hit = self.results.get(key)
            if hit is None or time.monotonic() - hit[0] > self.max_age:
                hit = (time.monotonic(), await self.compute(key))
                self.results[key] = hit
        return hit[1]


class NoStore:
    """The store of a worker without ClickHouse (NPSFLOW_ROLE=process, or web on embedded chDB): every read
    answers 503."""

    async def arun(self, *args, **kwargs):
        from aiohttp import web

        raise web.HTTPServiceUnavailable(text="this worker runs without ClickHouse (NPSFLOW_ROLE=process, or web "
                                              "with embedded chDB, which only the sink/all worker opens)\n")


class InternalApi:
    """The handlers of the internal listener. ``store`` is the worker's ClickHouseStore (``arun`` runs a query
    function off the event loop), ``stats`` the agents' counters, ``dimensions`` the dashboard's choices."""

    def __init__(self, store, stats, dimensions: list[str], themes: dict | None = None,
                 submit: Callable[[dict], Any] | None = None, invitations=None) -> None:
        self.store, self.stats = store if store is not None else NoStore(), stats
        self.invitations = invitations  # web.invitations.LocalInvitations (None: holds none)
        self.submit = submit  # async (case command event) → None once Kafka has it (None: commands refused)
        self.dimensions = dimensions or ["location"]
        self.themes = themes if themes is not None else terms.load_themes()
        self.dashboard_cache = SharedResult(lambda by: self.store.arun(queries.dashboard, by))
        self.words_cache = SharedResult(lambda _: self.store.arun(dashboard_words), max_age=WORDS_CACHE_SECONDS)
        self.cases_cache = SharedResult(lambda _: self.store.arun(casebook.open_cases))
        self.alerts_cache = SharedResult(lambda _: self.store.arun(queries.alerts, "open"))

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/healthz", healthz), web.get("/api/v1/stats", self.get_stats),
                web.get("/api/v1/report", self.report), web.get("/api/v1/windows", self.windows),
                web.get("/api/v1/dispatches", self.dispatches), web.get("/api/v1/deadletters", self.deadletters),
                web.get("/api/v1/dashboard", self.dashboard_data), web.get("/dashboard", self.dashboard_page),
                web.get("/api/v1/terms", self.terms), web.get("/api/v1/themes", self.theme_stats),
                web.get("/api/v1/cloud", self.cloud), web.get("/api/v1/cases", self.cases),
                web.get("/api/v1/case", self.case), web.get("/api/v1/cases/stats", self.case_stats),
                web.get("/api/v1/alerts", self.alerts), web.get("/api/v1/invitation/{inv_id}", self.invitation),
                web.post("/api/v1/cases/{case_id}/{kind}", self.case_command),
                web.get("/api/v1/contact", self.contact), web.get("/api/v1/contact/plan", self.contact_plan),
                web.post("/api/v1/contact/erase", self.contact_erase)]

    @staticmethod
    def _contact_args(params) -> tuple[str, str, str | None]:
        """org, pseudonym (32 hex characters: computed by the CLI, never the contact id) and the trigger route."""
        org, pseudonym = params.get("org") or "", params.get("pseudonym") or ""
        if not org or not re.fullmatch(r"[0-9a-f]{32}", pseudonym):
            raise ValueError("org and pseudonym (32 hex characters) are required")
        route = params.get("route") or None
        if route is not None and not (isinstance(route, str) and route.startswith(f"{org}|")):
            raise ValueError("route must be <org>|<contact id>")
        return org, pseudonym, route

    async def contact(self, request: web.Request) -> web.Response:
        """GET: everything ClickHouse holds of one contact (``npsflow export-contact``)."""
        try:
            org, pseudonym, route = self._contact_args(request.query)
        except ValueError as exc:
            return error(400, str(exc))
        return json_reply(await self.store.arun(erasure.export, org, pseudonym, route),
                          headers={"Cache-Control": "no-store"})

    async def contact_plan(self, request: web.Request) -> web.Response:
        """GET: what erasing the contact would delete (rows per table, invitation and event ids)."""
        try:
            org, pseudonym, route = self._contact_args(request.query)
        except ValueError as exc:
            return error(400, str(exc))
        return json_reply(await self.store.arun(erasure.plan, org, pseudonym, route),
                          headers={"Cache-Control": "no-store"})

    async def contact_erase(self, request: web.Request) -> web.Response:
        """POST: erase the contact's rows and record the request (``npsflow forget``)."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            org, pseudonym, route = self._contact_args(body)
            request_id, by, other = body.get("request_id"), body.get("by"), body.get("other") or {}
            if not isinstance(request_id, str) or not request_id or not isinstance(by, str) or \
                    not isinstance(other, dict) or not all(isinstance(v, int) for v in other.values()):
                raise ValueError("request_id and by (strings) are required; other: name → count")
        except ValueError as exc:
            return error(400, str(exc))
        record = await self.store.arun(erasure.erase, org, pseudonym, request_id=request_id, by=by,
                                       trigger_route=route, other=other)
        self.stats.inc("erasure.clickhouse")
        return json_reply(record)

    async def cases(self, request: web.Request) -> web.Response:
        try:
            return json_reply(await self.store.arun(casebook.cases, request.query.get("status") or None,
                                                    request.query.get("owner") or None))
        except ValueError as exc:
            return error(400, str(exc))

    async def case(self, request: web.Request) -> web.Response:
        case_id = request.query.get("id") or ""
        if not case_id:
            return error(400, "id is required")
        return json_reply({"case": await self.store.arun(casebook.case, case_id)})

    async def case_stats(self, request: web.Request) -> web.Response:
        try:
            return json_reply(await self.store.arun(casebook.case_stats, request.query.get("by") or "owner"))
        except ValueError as exc:
            return error(400, str(exc))

    async def case_command(self, request: web.Request) -> web.Response:
        """A command on a case, checked against the case as stored, then produced for the cases agent."""
        kind, case_id = request.match_info["kind"], request.match_info["case_id"]
        if kind not in COMMANDS:
            return error(404, f"unknown command {kind!r}")
        if self.submit is None:
            return error(503, "this worker does not take case commands")
        if request.content_type != "application/json":
            return error(415, "send the command as application/json")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return error(400, "the body must be a JSON object")
        fields = {name: body.get(name) for name in ("text", "owner", "reason")}
        if any(v is not None and not isinstance(v, str) for v in [*fields.values(), body.get("actor")]):
            return error(400, "actor, text, owner and reason must be strings")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not re.fullmatch(r"[A-Za-z0-9._:-]{8,80}", key):
            return error(400, "Idempotency-Key must be 8-80 of A-Z a-z 0-9 . _ : -")
        case = await self.store.arun(casebook.case, case_id)
        # a client's retry with the same key is the same command: the agent applies a command id once
        command_id = f"cmd-{key}" if key else f"cmd-{secrets.token_hex(16)}"
        if key and case is not None and command_id in case.get("command_ids", ()):
            return json_reply({"command_id": command_id, "case_id": case_id, "applied": True}, status=200)
        try:
            event = command_for(case, kind, body.get("actor") or "", command_id, **fields)
        except CommandRefused as exc:
            status = 404 if exc.reason == "unknown_case" else 400 if exc.reason.startswith(("missing_", "invalid_",
                                                                                             "text_")) else 409
            return json_reply({"error": exc.detail, "reason": exc.reason}, status=status)
        await self.submit(event)
        return json_reply({"command_id": command_id, "case_id": case_id}, status=202)

    async def invitation(self, request: web.Request) -> web.Response:
        """One invitation of this worker's table (never routed further: the asking worker routes)."""
        from web.invitations import HERE, RECOVERING

        inv_id = request.match_info["inv_id"]
        where = self.invitations.where(inv_id) if self.invitations is not None else "elsewhere"
        if where == RECOVERING:
            return json_reply({"error": "a rebalance or table recovery is in progress", "reason": "recovering"},
                              status=503)
        if where != HERE:
            return json_reply({"error": "another worker holds this invitation's partition", "reason": "not_held"},
                              status=409)
        inv = self.invitations.get(inv_id)
        if inv is None:
            return json_reply({"error": "no such invitation", "reason": "unknown"}, status=404)
        self.stats.inc("invitation.read_by_peer")
        return json_reply({"invitation": inv}, headers={"Cache-Control": "no-store"})

    async def get_stats(self, request: web.Request) -> web.Response:
        return json_reply(self.stats.as_dict())

    async def report(self, request: web.Request) -> web.Response:
        by = [d.strip() for d in (request.query.get("by") or "").split(",") if d.strip()]
        try:
            since = _time(request.query.get("since"), "since")
            until = _time(request.query.get("until"), "until")
        except Rejected as exc:
            return error(400, exc.detail)
        flag = request.query.get("compare_previous")
        if flag not in (None, "", "0", "1", "true", "false"):
            return error(400, "compare_previous must be 1/true or 0/false")
        query = queries.report_compared if flag in ("1", "true") else queries.report
        try:
            result = await self.store.arun(query, by, since, until)
        except ValueError as exc:
            return error(400, str(exc))
        return json_reply(result)

    async def windows(self, request: web.Request) -> web.Response:
        raw = request.query.get("segment")
        segment = None
        if raw:
            dim, sep, value = raw.partition("=")
            if not sep:
                return error(400, "segment must look like DIM=VALUE")
            segment = (dim, value)
        return json_reply(await self.store.arun(queries.windows, segment))

    async def terms(self, request: web.Request) -> web.Response:
        try:
            query = term_query(request.query)
            return json_reply(await self.store.arun(terms.terms, query))
        except (Rejected, ValueError) as exc:
            return error(400, exc.detail if isinstance(exc, Rejected) else str(exc))

    async def theme_stats(self, request: web.Request) -> web.Response:
        try:
            query = term_query(request.query)
            return json_reply(await self.store.arun(terms.themes, query, self.themes))
        except (Rejected, ValueError) as exc:
            return error(400, exc.detail if isinstance(exc, Rejected) else str(exc))

    async def cloud(self, request: web.Request) -> web.Response:
        try:
            unknown = sorted(set(request.query) - {"since", "until"})
            if unknown:
                raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
            query = term_query(request.query).checked()
            since, until = query.period(datetime.now(timezone.utc))
            return json_reply(await self.store.arun(terms.cloud_words, since, until))
        except (Rejected, ValueError) as exc:
            return error(400, exc.detail if isinstance(exc, Rejected) else str(exc))

    async def alerts(self, request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"status"})
        if unknown:
            return error(400, f"unknown parameter(s): {', '.join(unknown)}")
        try:
            return json_reply(await self.store.arun(queries.alerts, request.query.get("status") or None))
        except ValueError as exc:
            return error(400, str(exc))

    async def dispatches(self, request: web.Request) -> web.Response:
        return json_reply(await self.store.arun(queries.dispatches))

    async def deadletters(self, request: web.Request) -> web.Response:
        return json_reply(await self.store.arun(queries.deadletters))

    async def dashboard_data(self, request: web.Request) -> web.Response:
        by = request.query.get("by") or self.dimensions[0]
        try:
            queries.validate_dimension(by)
        except ValueError as exc:
            return error(400, str(exc))
        return json_reply(await self._dashboard(by), headers={"Cache-Control": "no-store"})

    async def _dashboard(self, by: str) -> dict:
        data = dict(await self.dashboard_cache.get(by))
        # each a cache of its own; a failure (e.g. a migration not applied yet) never hides the numbers
        data["words"] = await _optional("words", self.words_cache, None)
        data["cases"] = await _optional("cases", self.cases_cache, None)
        alerts = await _optional("alerts", self.alerts_cache, None)
        data["alerts"] = alerts["alerts"] if alerts else []
        return data

    async def dashboard_page(self, request: web.Request) -> web.Response:
        """The page, with the data it shows first (drawn before the first paint: no layout shift as it fills);
        when that data cannot be read, the page still loads and its script keeps asking."""
        by = request.query.get("by") or self.dimensions[0]
        nonce = secrets.token_urlsafe(12)
        try:
            queries.validate_dimension(by)
        except ValueError as exc:
            return error(400, str(exc))
        try:
            initial = await self._dashboard(by)
        except Exception as exc:
            log.warning("dashboard page without data: %s", str(exc).splitlines()[0][:300] if str(exc) else repr(exc))
            initial = None
        page = render_dashboard(by=by, dimensions=self.dimensions, nonce=nonce, initial=initial)
        return html_reply(page, headers={"Content-Security-Policy": content_security_policy(nonce), **DASHBOARD_HEADERS})


async def _optional(name: str, cache: SharedResult, default: Any) -> Any:
    """A dashboard section's data, or ``default`` (logged) when its query fails."""
    try:
        return await cache.get("")
    except Exception as exc:
        log.warning("dashboard %s unavailable: %s", name, str(exc).splitlines()[0][:300] if str(exc) else exc)
        return default


_TERM_INTS = ("min_count", "min_category", "min_respondents", "limit", "examples")


def term_query(params) -> terms.TermQuery:
    """A sinks.terms.TermQuery from query parameters (unknown ones refused: a typo must not pass silently)."""
    unknown = sorted(set(params) - {"since", "until", "by", "lang", "category", *_TERM_INTS})
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {"since": _time(params.get("since"), "since"), "until": _time(params.get("until"), "until")}
    for name in ("by", "lang", "category"):
        if params.get(name):
            values[name] = params[name]
    for name in _TERM_INTS:
        if params.get(name):
            if not params[name].isdigit() or len(params[name]) > 9:
                raise ValueError(f"{name} must be a whole number")
            values[name] = int(params[name])
    return terms.TermQuery(**values)


@web.middleware
async def store_unavailable(request: web.Request, handler):
    """A read whose ClickHouse store cannot be opened (sinks.clickhouse.DeferredStore: a server that is down when
    a web worker first needs it) answers 503 with the one-line reason, not 500."""
    from sinks.clickhouse import ClickHouseError

    try:
        return await handler(request)
    except ClickHouseError as exc:
        return web.json_response({"error": str(exc)}, status=503, headers={"Cache-Control": "no-store"})


def internal_app(api: InternalApi, *, allowed_hosts: frozenset[str], token: str | None,
                 readyz=None) -> web.Application:
    """The aiohttp application of the internal listener: the host guard first, then the optional token.
    ``readyz``: the handler of GET /readyz (web.health.Readiness.handle)."""
    quiet_client_errors()
    app = web.Application(middlewares=[leftover_body(), transport_policy(), host_guard(allowed_hosts),
                                       bearer_guard(token), store_unavailable])
    app.add_routes(api.routes())
    app.add_routes([web.get("/favicon.ico", favicon)])
    if readyz is not None:
        app.add_routes([web.get("/readyz", readyz)])
    return app
