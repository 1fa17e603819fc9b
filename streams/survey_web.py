"""The respondent's survey page and the response API, served by the worker's web server (Faust web / aiohttp).

GET  /s/{token}           the survey page of the invitation the signed token names, branded and in its locale; a
                          one-click score link (from the e-mail) preselects the score and submits it at once —
                          by a tiny inline script, so mail scanners that prefetch links record nothing
POST /s/{token}           step "score": score 0–10 + optional comment → a raw response → the thank-you page with
                          the category's follow-up question; step "follow_up": its answer (a new version)
POST /api/v1/responses    a JSON batch of responses collected elsewhere, per-organization API keys
                          (``Authorization: Bearer <key>``), per-record validation results in the reply

An answer becomes a RawResponse on the raw topic with ``response_id = invitation_id`` (one response per
invitation; a change is a new version, latest wins) keyed by the invitation id, so classify joins it to the
invitation's segments. The first answer opens the edit window (``NPSFLOW_EDIT_WINDOW``); after it, the link
shows "already answered" and writes nothing. Nothing is written for a forged, expired or unknown token, a
missing/invalid CSRF token, an oversized body or a rate-limited client. Logs name invitation ids, never
addresses, comments or client IPs.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from faust.web import View

from npsflow.ingest import response_key, to_raw_response
from schemas import codec as avro
from streams import links
from streams.guards import RateLimiter, api_key_matches, csrf_token, csrf_valid
from streams.responses import Rejected, validate

log = logging.getLogger("npsflow.survey")

MAX_FORM_BYTES = 48 * 1024  # two fields of 2000 characters, percent-encoded UTF-8, fit; nothing much bigger
MAX_API_BYTES = 1024 * 1024
MAX_API_RECORDS = 1000
MAX_FORM_TEXT = 2000  # the comment and follow-up fields of the page (the API allows MAX_COMMENT_CHARS)
STATUS = {"invalid": 404, "expired": 410, "answered": 409, "rate_limited": 429, "too_large": 413,
          "unavailable": 503}


def security_headers(nonce: str, logo_url: str | None = None) -> dict[str, str]:
    from urllib.parse import urlsplit

    img = "'self' data:"
    if logo_url:
        parts = urlsplit(logo_url)
        if parts.scheme == "https" and parts.netloc:
            img += f" https://{parts.netloc}"
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                                    f"img-src {img}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def install_survey(pipeline, book, settings) -> None:
    from streams import survey_page as page

    app, stats, clock = pipeline.app, pipeline.stats, pipeline.clock
    invitations = pipeline.tables["invitations"]
    raw_topic = pipeline.topics["raw"]
    codec = pipeline.codec
    edit_window = timedelta(seconds=settings.edit_window_seconds)
    per_ip = RateLimiter(rate=settings.page_rate, burst=30 * settings.page_rate)  # default: 30 at once, then 1/s
    trusted = frozenset(settings.trusted_proxies)

    def client_ip(request) -> str:
        """The client's IP: the peer, or — behind a trusted reverse proxy — the last address it appended."""
        peer = request.remote or "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if peer in trusted and forwarded:
            return forwarded.split(",")[-1].strip() or peer
        return peer
    per_invitation = RateLimiter(rate=0.2, burst=10)  # one invitation: 10 at once, then one per 5 s
    per_api_key = RateLimiter(rate=50.0, burst=200)

    def answer(web, kind: str, locale: str = "en", brand: dict | None = None, headers: dict | None = None):
        """A notice page (invalid or expired link, already answered, …): nothing was written."""
        nonce = secrets.token_urlsafe(12)
        body = page.render_message(kind=kind, locale=locale, brand=brand, nonce=nonce)
        stats.inc(f"survey.page.{kind}")
        return web.html(body, status=STATUS[kind], headers={**security_headers(nonce), **(headers or {})})

    def limited(web, request, inv_id: str | None):
        now = time.monotonic()
        ip = client_ip(request)
        for limiter, key in ((per_ip, ip), (per_invitation, inv_id)):
            if key is not None and not limiter.allow(key, now):
                wait = max(1, int(limiter.retry_after(key, now) + 0.999))
                return answer(web, "rate_limited", headers={"Retry-After": str(wait)})
        return None

    def context(inv: dict):
        found = book.found(inv["org"], inv["program"])
        if found is None:
            return None
        org, program = found
        from npsflow.programs import branding, texts

        return org, program, texts(org, inv["locale"], program), branding(org, inv["locale"])

    def check_token(token: str):
        try:
            return links.verify_token(token, book.link_keys, clock()), None
        except links.InvalidToken as exc:
            return None, "expired" if exc.reason == links.EXPIRED else "invalid"

    def closed(inv: dict, now: datetime) -> bool:
        first = inv.get("answered_at")
        return bool(inv.get("resp")) and first is not None and now.timestamp() * 1000 > first + edit_window.total_seconds() * 1000

    async def produce(inv: dict, score: int, comment: str | None, follow_up: str | None, now: datetime,
                      source: str = "web") -> None:
        obj = {"response_id": inv["inv"], "invitation_id": inv["inv"], "survey_id": inv.get("survey_id"),
               "score": score, "comment": comment, "follow_up": follow_up,
               "responded_at": now.isoformat(), "locale": inv.get("locale")}
        record = to_raw_response({k: v for k, v in obj.items() if v is not None}, source=source, received_at=now)
        future = await raw_topic.send(key=response_key(record), value=codec.encode(avro.RAW_RESPONSE, record))
        await future  # the answer is in Kafka before the respondent is thanked

    @app.page("/s/{token}")
    class Survey(View):
        async def get(self, request, token):
            claims, problem = check_token(token)
            if problem:
                return limited(self, request, None) or answer(self, problem)
            inv_id = claims.invitation_id
            blocked = limited(self, request, inv_id)
            if blocked:
                return blocked
            inv = invitations.get(f"I|{inv_id}")
            found = context(inv) if inv else None
            if found is None:
                return answer(self, "invalid")
            org, program, words, brand = found
            now = clock()
            if closed(inv, now):
                return answer(self, "answered", inv["locale"], brand)
            nonce = secrets.token_urlsafe(12)
            preselected = claims.score if claims.score is not None else inv.get("answer_score")
            html = page.render_survey(brand=brand, texts=words, locale=inv["locale"], action=f"/s/{token}",
                                      csrf=csrf_token(book.secret, inv_id, now), preselected=preselected,
                                      auto_submit=claims.score is not None, nonce=nonce)
            stats.inc("survey.page.shown")
            return self.html(html, headers=security_headers(nonce, brand.get("logo_url")))

        async def post(self, request, token):
            if (request.content_length or 0) > MAX_FORM_BYTES:
                return answer(self, "too_large")
            claims, problem = check_token(token)
            if problem:
                return limited(self, request, None) or answer(self, problem)
            inv_id = claims.invitation_id
            blocked = limited(self, request, inv_id)
            if blocked:
                return blocked
            try:
                raw = await request.content.read(MAX_FORM_BYTES + 1)
            except Exception:
                return answer(self, "invalid")
            if len(raw) > MAX_FORM_BYTES:
                return answer(self, "too_large")
            from urllib.parse import parse_qs

            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
            inv = invitations.get(f"I|{inv_id}")
            found = context(inv) if inv else None
            if found is None:
                return answer(self, "invalid")
            org, program, words, brand = found
            now = clock()
            if closed(inv, now):
                return answer(self, "answered", inv["locale"], brand)
            if not csrf_valid(book.secret, inv_id, form.get("csrf"), now):
                stats.inc("survey.csrf_refused")
                return answer(self, "invalid", inv["locale"], brand)
            step = form.get("step") or "score"
            comment = (form.get("comment") or "").strip()[:MAX_FORM_TEXT] or None
            follow_up = (form.get("follow_up") or "").strip()[:MAX_FORM_TEXT] or None
            score_text = (form.get("score") or "").strip()
            if not score_text.isdigit() or not 0 <= int(score_text) <= 10:
                nonce = secrets.token_urlsafe(12)
                html = page.render_survey(brand=brand, texts=words, locale=inv["locale"], action=f"/s/{token}",
                                          csrf=csrf_token(book.secret, inv_id, now), comment=comment or "",
                                          nonce=nonce, errors=[page.page_texts(inv["locale"])["pick_score"]])
                return self.html(html, status=400, headers=security_headers(nonce, brand.get("logo_url")))
            score = int(score_text)
            category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
            if step == "follow_up" and form.get("skip"):  # no follow-up answer: nothing to record
                nonce = secrets.token_urlsafe(12)
                html = page.render_thanks(brand=brand, texts=words, locale=inv["locale"], category=category,
                                          action=f"/s/{token}", csrf=csrf_token(book.secret, inv_id, now),
                                          nonce=nonce, review_url=org.review_url if category == "promoter" else None,
                                          follow_up_done=True)
                return self.html(html, headers=security_headers(nonce, brand.get("logo_url")))
            try:
                await produce(inv, score, comment, follow_up if step == "follow_up" else None, now)
            except Exception:
                log.exception("survey: could not record the answer of invitation %s", inv_id)
                return answer(self, "unavailable", inv["locale"], brand)
            stats.inc(f"survey.answer.{step}")
            log.info("survey: invitation %s answered (%s)", inv_id, step)
            nonce = secrets.token_urlsafe(12)
            html = page.render_thanks(brand=brand, texts=words, locale=inv["locale"], category=category,
                                      action=f"/s/{token}", csrf=csrf_token(book.secret, inv_id, now), nonce=nonce,
                                      review_url=org.review_url if category == "promoter" else None,
                                      follow_up_done=step == "follow_up", score=score, comment=comment or "")
            return self.html(html, headers=security_headers(nonce, brand.get("logo_url")))

    @app.page("/api/v1/responses")
    class Responses(View):
        async def post(self, request):
            auth = request.headers.get("Authorization") or ""
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            org = next((o for o in (book.programs.organizations if book.programs else ())
                        if key and api_key_matches(key, o.api_keys)), None)
            if org is None:
                stats.inc("api.unauthorized")
                return self.json({"error": "unauthorized: Authorization: Bearer <API key of an organization>"},
                                 status=401)
            if not per_api_key.allow(org.id, time.monotonic()):
                return self.json({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
            if (request.content_length or 0) > MAX_API_BYTES:
                return self.json({"error": f"body larger than {MAX_API_BYTES} bytes"}, status=413)
            raw = await request.content.read(MAX_API_BYTES + 1)
            if len(raw) > MAX_API_BYTES:
                return self.json({"error": f"body larger than {MAX_API_BYTES} bytes"}, status=413)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return self.json({"error": f"not JSON: {exc}"}, status=400)
            records = body.get("responses") if isinstance(body, dict) else body
            if not isinstance(records, list) or not records:
                return self.json({"error": "expected a non-empty JSON list of responses (or {\"responses\": [...]})"},
                                 status=400)
            if len(records) > MAX_API_RECORDS:
                return self.json({"error": f"at most {MAX_API_RECORDS} responses per request"}, status=413)
            now = clock()
            results: list[dict[str, Any]] = []
            futures = []
            for i, obj in enumerate(records):
                if not isinstance(obj, dict):
                    results.append({"index": i, "status": "rejected", "reason": "not_a_json_object"})
                    continue
                record = to_raw_response(obj, source=f"api:{org.id}", received_at=now)
                try:
                    validate(record, now)
                except Rejected as exc:
                    results.append({"index": i, "status": "rejected", "reason": exc.reason, "detail": exc.detail,
                                    "response_id": obj.get("response_id")})
                    continue
                futures.append(await raw_topic.send(key=response_key(record),
                                                    value=codec.encode(avro.RAW_RESPONSE, record)))
                results.append({"index": i, "status": "accepted", "response_id": record["response_id"]})
            for future in futures:
                await future
            accepted = sum(r["status"] == "accepted" for r in results)
            stats.inc("api.responses.accepted", accepted)
            stats.inc("api.responses.rejected", len(results) - accepted)
            return self.json({"accepted": accepted, "rejected": len(results) - accepted, "results": results})

    pipeline.agents["survey_pages"] = Survey
    pipeline.agents["responses_api"] = Responses

