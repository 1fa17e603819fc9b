"""The worker's HTTP API (Faust web / aiohttp): read-only analytics over the worker's own ClickHouse store.

GET /healthz                 liveness
GET /api/v1/stats            in-memory counters of the agents
GET /api/v1/report?by=location,channel&since=ISO&until=ISO[&compare_previous=1]
GET /api/v1/windows?segment=location=Espoo
GET /api/v1/deadletters
GET /api/v1/dispatches
GET /api/v1/dashboard?by=location    what the live dashboard shows (sinks.queries.dashboard)
GET /dashboard?by=location           the built-in live dashboard (streams.dashboard)
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from streams.responses import Rejected, parse_timestamp


DASHBOARD_CACHE_SECONDS = 5.0


def _time(value: str | None, name: str) -> datetime | None:
    return parse_timestamp(value, name) if value else None


def install_web(pipeline, store) -> None:
    from sinks import queries

    app = pipeline.app

    def error(web, status: int, message: str):
        return web.json({"error": message}, status=status)

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"ok": True})

    @app.page("/api/v1/stats")
    async def stats(web, request):
        return web.json(pipeline.stats.as_dict())

    @app.page("/api/v1/report")
    async def report(web, request):
        by = [d.strip() for d in (request.query.get("by") or "").split(",") if d.strip()]
        try:
            since = _time(request.query.get("since"), "since")
            until = _time(request.query.get("until"), "until")
        except Rejected as exc:
            return error(web, 400, exc.detail)
        flag = request.query.get("compare_previous")
        if flag not in (None, "", "0", "1", "true", "false"):
            return error(web, 400, "compare_previous must be 1/true or 0/false")
        compared = flag in ("1", "true")
        try:
            result = await store.arun(queries.report_compared if compared else queries.report, by, since, until)
        except ValueError as exc:
            return error(web, 400, str(exc))
        return web.json(result)

    @app.page("/api/v1/windows")
    async def windows(web, request):
        raw = request.query.get("segment")
        segment = None
        if raw:
            dim, sep, value = raw.partition("=")
            if not sep:
                return error(web, 400, "segment must look like DIM=VALUE")
            segment = (dim, value)
        return web.json(await store.arun(queries.windows, segment))

    @app.page("/api/v1/dispatches")
    async def dispatches(web, request):
        return web.json(await store.arun(queries.dispatches))

    @app.page("/api/v1/deadletters")
    async def deadletters(web, request):
        return web.json(await store.arun(queries.deadletters))

    dimensions = [d for d in pipeline.settings.dimensions if d != "overall"] or ["location"]

    cache: dict[str, tuple[float, dict]] = {}
    computing: dict[str, asyncio.Lock] = {}

    @app.page("/api/v1/dashboard")
    async def dashboard_data(web, request):
        """Shared by every open dashboard: computed at most once per DASHBOARD_CACHE_SECONDS per dimension
        (one computation at a time), so open tabs never keep the store — which the sinks also use — busy."""
        by = request.query.get("by") or dimensions[0]
        try:
            queries.validate_dimension(by)
        except ValueError as exc:
            return error(web, 400, str(exc))
        async with computing.setdefault(by, asyncio.Lock()):
            hit = cache.get(by)
            if hit is None or time.monotonic() - hit[0] > DASHBOARD_CACHE_SECONDS:
                hit = (time.monotonic(), await store.arun(queries.dashboard, by))
                cache[by] = hit
        return web.json(hit[1], headers={"Cache-Control": "no-store"})

    @app.page("/dashboard")
    async def dashboard_page(web, request):
        import secrets

        from streams.dashboard import content_security_policy, render_dashboard

        by = request.query.get("by") or dimensions[0]
        nonce = secrets.token_urlsafe(12)
        try:
            page = render_dashboard(by=by, dimensions=dimensions, nonce=nonce)
        except ValueError as exc:
            return error(web, 400, str(exc))
        return web.html(page, headers={"Content-Security-Policy": content_security_policy(nonce),
                                       "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                                       "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})
